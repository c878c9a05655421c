"""The one MLflow-run API, against a real MLflow store (SQLite): a retried first task continues its run,
a run that ended is never reopened, and a failure is recorded with its reason."""

from __future__ import annotations

from pathlib import Path

from patientinsight.tracking import DAG_TAG, RUN_TAG, TrackedRun
from tests.helpers import mlflow_run


def test_a_running_run_is_continued_and_an_ended_one_is_not_reopened(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = TrackedRun.open(uri, "exp", "manual__1", "patient_ingest", tags={"extra": "yes"})
    again = TrackedRun.open(uri, "exp", "manual__1", "patient_ingest")  # a retry of the first task
    assert again == first
    first.log_params({"limit": 10})
    again.log_params({"limit": 20})  # params are write-once: the retry keeps the first value, no error
    first.log_metrics({"read": 10.0})
    first.finish()
    run = mlflow_run(uri, first.run_id)
    assert run.info.status == "FINISHED" and run.data.params["limit"] == "10" and run.data.metrics["read"] == 10
    assert (run.data.tags[RUN_TAG], run.data.tags[DAG_TAG], run.data.tags["extra"]) == (
        "manual__1",
        "patient_ingest",
        "yes",
    )
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    rerun = TrackedRun.open(uri, "exp", "manual__1", "patient_ingest")  # the same id, once the run has ended
    assert rerun.run_id != first.run_id
    rerun.fail("SageMaker said no")
    failed = mlflow_run(uri, rerun.run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["failure_reason"] == "SageMaker said no"
    assert rerun.url("http://mlflow:5000/") == f"http://mlflow:5000/#/runs/{rerun.run_id}"
