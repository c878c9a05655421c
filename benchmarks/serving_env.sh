#!/usr/bin/env bash
# The serving image's Python environment, built as the Dockerfile's `serving` target builds it (torch
# from constraints.txt first, then the requirements file, then the project without dependencies), in a
# throwaway venv per requirements file given; prints its size, its distributions and what
# `import serving.app` loads of the ingest side.
#   bash benchmarks/serving_env.sh requirements-serving.txt [older-requirements.txt ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
printf '| requirements | size (MiB) | distributions | ingest modules loaded by import serving.app |\n|---|---|---|---|\n'
for req in "$@"; do
  venv=$(mktemp -d)/venv
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip>=25" >/dev/null 2>&1
  "$venv/bin/pip" install -q -c constraints.txt torch==2.13.0 >/dev/null 2>&1
  "$venv/bin/pip" install -q -c constraints.txt -r "$req" >/dev/null 2>&1
  "$venv/bin/pip" install -q --no-deps . >/dev/null 2>&1
  rm -rf build
  size=$(du -sm "$venv" | cut -f1)
  count=$("$venv/bin/pip" list 2>/dev/null | tail -n +3 | wc -l)
  loaded=$(cd /tmp && HF_HUB_OFFLINE=1 "$venv/bin/python" -c "import serving.app, sys; \
print(', '.join(m for m in ('pandera', 'ydata_profiling', 'ijson', 'fsspec', 'mlflow', 'airflow') if m in sys.modules) or 'none')")
  printf '| %s | %s | %s | %s |\n' "$req" "$size" "$count" "$loaded"
  rm -rf "$(dirname "$venv")"
done
