"""One MLflow run per ingest run: params, metrics and artifacts, written by whichever step has them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient  # heavy import, paid only by steps that track

    return MlflowClient(tracking_uri=tracking_uri)


def artifact_location(tracking_uri: str) -> str | None:
    """A local SQLite store keeps its artifacts beside it; MLflow's default is ./mlruns in the
    current directory, which scatters reports wherever a command happens to run."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None  # a tracking server decides where its artifacts go


def start_run(tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found
        else client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
    )
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    return str(run.info.run_id)


def find_run(tracking_uri: str, experiment: str, tag: str, value: str) -> str | None:
    """The run tagged `tag=value`, so a retried first task reuses its run instead of adding one."""
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return str(runs[0].info.run_id) if runs else None


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    client = _client(tracking_uri)
    existing = client.get_run(run_id).data.params
    for key, value in params.items():
        if key not in existing:  # params are write-once in MLflow; a retry must not fail on them
            client.log_param(run_id, key, str(value))


def log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, float]) -> None:
    from mlflow.entities import Metric

    client = _client(tracking_uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def log_artifacts(tracking_uri: str, run_id: str, paths: list[Path], folder: str | None = None) -> None:
    client = _client(tracking_uri)
    for path in paths:
        if path.exists():
            client.log_artifact(run_id, str(path), artifact_path=folder)


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(tracking_uri).set_terminated(run_id, status=status)
