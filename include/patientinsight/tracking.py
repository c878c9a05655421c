"""MLflow, in one place: each tracked DAG (and the command line) opens one MLflow run per pipeline run through
`TrackedRun.open`, fills it with params, metrics, tags and artifacts, and closes it with `finish` or
`fail`. A retried first task finds its run by tag instead of opening another one."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_TAG = "airflow.run_id"  # the pipeline run this MLflow run belongs to (an Airflow run id, or the CLI's)
DAG_TAG = "airflow.dag_id"  # the pipeline: a DAG id (the command line runs patient_ingest's steps too)
# The XCom key under which a DAG run's first task leaves its MLflow run's address; the link of
# plugins/mlflow_link.py reads it from there for every task of the run.
LINK_XCOM_KEY = "mlflow_run_url"


@lru_cache(maxsize=4)
def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient  # heavy import, paid only by steps that track

    return MlflowClient(tracking_uri=tracking_uri)


def artifact_location(tracking_uri: str) -> str | None:
    """A local SQLite store keeps its artifacts beside it; MLflow's default is ./mlruns in the
    current directory, which scatters reports wherever a command happens to run."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None  # a tracking server decides where its artifacts go


def run_url(ui_url: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/runs/{run_id}"


@dataclass(frozen=True)
class TrackedRun:
    """One MLflow run, addressed by its tracking store and id (what a task's state carries)."""

    tracking_uri: str
    run_id: str

    @classmethod
    def open(
        cls,
        tracking_uri: str,
        experiment: str,
        pipeline_run: str,
        pipeline: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> TrackedRun:
        """The MLflow run of pipeline run `pipeline_run` of `pipeline` (a DAG id): found by its tag when
        an earlier try opened it and it is still running, else started, with the same tags whoever
        starts it."""
        client = _client(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            # Only a run still open: a retried first task continues it, while a run that ended (a second
            # `patientinsight ingest --run-id X`, a DAG run cleared after it failed) gets a run of its own.
            wanted = f"tags.`{RUN_TAG}` = '{pipeline_run}' and attributes.status = 'RUNNING'"
            runs = client.search_runs([found.experiment_id], filter_string=wanted, max_results=1)
            if runs:
                return cls(tracking_uri, str(runs[0].info.run_id))
            experiment_id = found.experiment_id
        else:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
        all_tags = {RUN_TAG: pipeline_run, DAG_TAG: pipeline, **(tags or {})}
        run = client.create_run(experiment_id, run_name=run_name or pipeline_run, tags=all_tags)
        return cls(tracking_uri, str(run.info.run_id))

    def url(self, ui_url: str) -> str:
        return run_url(ui_url, self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        client = _client(self.tracking_uri)
        existing = client.get_run(self.run_id).data.params
        for key, value in params.items():
            if key not in existing:  # params are write-once in MLflow; a retry must not fail on them
                client.log_param(self.run_id, key, str(value))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        _client(self.tracking_uri).log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        client = _client(self.tracking_uri)
        for key, value in tags.items():
            client.set_tag(self.run_id, key, value)

    def log_artifacts(self, paths: list[Path], folder: str | None = None) -> None:
        client = _client(self.tracking_uri)
        for path in paths:
            if path.exists():
                client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self) -> None:
        _client(self.tracking_uri).set_terminated(self.run_id, status="FINISHED")

    def fail(self, reason: str | None = None) -> None:
        """Close the run as FAILED, with the reason as a tag when there is one (never patient text)."""
        if reason:
            _client(self.tracking_uri).set_tag(self.run_id, "failure_reason", reason[:4000])
        _client(self.tracking_uri).set_terminated(self.run_id, status="FAILED")
