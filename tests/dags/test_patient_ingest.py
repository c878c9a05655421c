"""patient_ingest with dag.test(): real tasks, real metadata database, real MLflow store.

The ingest scenario itself (rerun, change, full refresh, the gate) is tested once, through the command
line's path (tests/unit/ingest/test_ingest_run.py): the DAG's tasks call the same functions of
patientinsight.ingest.run. Here: that the DAG runs them in an order the command line follows, that a DAG
run makes the same MLflow run as the command line, and that every task links to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from patientinsight.index.factory import make_index
from patientinsight.ingest import run as ingest_run
from patientinsight.ingest.lake import run_key
from patientinsight.settings import Settings
from patientinsight.tracking import LINK_XCOM_KEY
from tests.helpers import mlflow_run

ONLY_IN_THE_DAG = {"approve_publish"}  # a person's answer: the command line has --allow-worse instead


def test_the_command_line_runs_the_steps_in_an_order_the_dag_allows(dag: Any) -> None:
    # Task names are the step names: no table translates one to the other.
    assert {task.task_id for task in dag.tasks} - ONLY_IN_THE_DAG == set(ingest_run.ORDER)
    for task in dag.tasks:
        if task.task_id in ONLY_IN_THE_DAG:
            continue
        for upstream in task.upstream_task_ids - ONLY_IN_THE_DAG:
            assert ingest_run.ORDER.index(upstream) < ingest_run.ORDER.index(task.task_id), (
                f"{upstream} runs before {task.task_id} in the DAG, after it on the command line"
            )


def test_a_dag_run_makes_the_command_lines_mlflow_run_and_every_task_links_to_it(
    dag: Any, home: Settings, sample_csv: Path, tmp_path: Path
) -> None:
    dag_run = dag.test(run_conf={"source_uri": str(sample_csv), "limit": 10})
    assert dag_run.state == "success", dag_run.state
    report = json.loads((home.runs_dir / run_key(dag_run.run_id) / "report.json").read_text())
    assert report["read"] == 10 == report["indexed"] + report["quarantined"]
    assert make_index(home).published() == report["index_version"]
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:  # the Asset that downstream DAGs can schedule on
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "patient_index", AssetEvent.source_run_id == dag_run.run_id)
        )
        events = session.scalars(query).all()
        assert [e.extra["version"] for e in events] == [report["index_version"]]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=home.tracking_uri)
    experiment = client.get_experiment_by_name(home.mlflow_experiment)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`airflow.run_id` = '{dag_run.run_id}'")
    run = mlflow_run(home.tracking_uri, found.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["limit"] == "10"
    assert run.data.metrics["read"] == 10 == run.data.metrics["indexed"] + run.data.metrics["quarantined"]
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id, "reports")}
    assert {"reports/validation.json", "reports/profile.html", "reports/report.json"} <= artifacts

    # Again, unchanged: no shard to embed, yet the version is built (from the published one) and the run ends.
    again = dag.test(run_conf={"source_uri": str(sample_csv), "limit": 10})
    assert again.state == "success", again.state
    rerun = json.loads((home.runs_dir / run_key(again.run_id) / "report.json").read_text())
    assert (rerun["embedded"], rerun["index_version"]) == (0, report["index_version"])

    # The command line on the same input: the same tags, params and metrics, by name.
    cli_settings = Settings(home=tmp_path / "cli-home")
    cli_report = ingest_run.run_ingest(str(sample_csv), cli_settings, limit=10, run_id="cli-run")
    cli_run = mlflow_run(cli_settings.tracking_uri, cli_report["mlflow_run_id"])
    assert cli_run.data.tags["airflow.dag_id"] == run.data.tags["airflow.dag_id"] == "patient_ingest"
    system = {k for k in {**run.data.tags, **cli_run.data.tags} if k.startswith("mlflow.")}
    assert set(run.data.tags) - system == set(cli_run.data.tags) - system
    assert set(run.data.params) == set(cli_run.data.params)
    assert set(run.data.metrics) == set(cli_run.data.metrics)

    # Every task instance of the run links to the MLflow run, read from the one XCom the first task left.
    from airflow.models.xcom import XComModel

    from plugins.mlflow_link import MlflowRunLink

    for ti in dag_run.get_task_instances():
        url = MlflowRunLink().get_link(None, ti_key=ti.key)
        assert url == f"{home.mlflow_ui_url.rstrip('/')}/#/runs/{found.info.run_id}", (ti.task_id, url)
    query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag.dag_id, key=LINK_XCOM_KEY)
    with create_session() as session:
        assert [row.task_id for row in session.scalars(query)] == ["begin"]


def test_every_field_of_the_form_reaches_the_run(dag: Any, home: Settings) -> None:
    """The form's defaults, as the first task hands them to the others; a field the run ignores fails."""
    params = {name: dag.params[name] for name in dag.params}
    state = ingest_run.begin(home, "form-defaults", params)
    assert {name: state[name] for name in params} == params


def test_the_embed_pool_is_defined_for_local_runs(dag: Any, repo_root: Path) -> None:
    import yaml

    pools = {
        pool["pool_name"]
        for pool in yaml.safe_load((repo_root / "airflow_settings.yaml").read_text())["airflow"]["pools"]
    }
    assert dag.get_task("embed").pool in pools


def test_bad_source_fails_the_run_and_the_mlflow_run(dag: Any, home: Settings, tmp_path: Path) -> None:
    """A source that is not there fails the first task, once (no retry), and nothing after it runs."""
    missing = tmp_path / "nothing-here.csv"
    dag_run = dag.test(run_conf={"source_uri": str(missing)})
    assert dag_run.state == "failed"
    states = {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}
    assert states["begin"] == ("failed", 1)
    assert states["validate"][0] == "upstream_failed"
    assert make_index(home).published() is None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=home.tracking_uri)
    experiment = client.get_experiment_by_name(home.mlflow_experiment)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`airflow.run_id` = '{dag_run.run_id}'")
    assert found.info.status == "FAILED"
