"""patient_ingest end to end with dag.test(): real tasks, real metadata database, real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from patientinsight.embedding.encoder import make_embedder
from patientinsight.index.factory import make_index
from patientinsight.ingest.lake import run_key
from patientinsight.settings import Settings
from tests.helpers import changed_and_removed, mlflow_run, read_rows


def run(dag: Any, settings: Settings, **conf: Any) -> dict[str, Any]:
    dag_run = dag.test(run_conf=conf)
    assert dag_run.state == "success", dag_run.state
    return json.loads((settings.runs_dir / run_key(dag_run.run_id) / "report.json").read_text())


def test_ingest_rerun_and_change(dag: Any, home: Settings, sample_csv: Path, tmp_path: Path) -> None:
    first = run(dag, home, source_uri=str(sample_csv))
    rows = len(read_rows(sample_csv))
    assert first["read"] == rows == first["indexed"] + first["quarantined"]
    assert first["quarantined"] == 1 and first["embedded"] == first["indexed"]

    reader = make_index(home).open(make_index(home).published())
    query = make_embedder(home).embed_query("projectile vomiting after feeds in an infant, pyloromyotomy")
    top = reader.records([h.uid for h in reader.search(query, 2)])
    assert top["title"].str.contains("Pyloric stenosis").all()

    runs_dir = Path(first["report_dir"])
    assert (runs_dir / "profile.html").exists() and (runs_dir / "quarantine.jsonl").exists()

    second = run(dag, home, source_uri=str(sample_csv))
    assert second["embedded"] == 0 and second["unchanged"] == first["indexed"]
    assert second["index_version"] == first["index_version"]

    edited, changed, removed = changed_and_removed(sample_csv, tmp_path / "edited.csv")
    third = run(dag, home, source_uri=str(edited), full_refresh=True, max_mrr_drop=1.0)
    assert (third["embedded"], third["deleted"]) == (1, 1)
    hashes = make_index(home).open(third["index_version"]).hashes()
    assert changed in hashes and removed not in hashes


def test_mlflow_run_per_dag_run(dag: Any, home: Settings, sample_csv: Path) -> None:
    dag_run = dag.test(run_conf={"source_uri": str(sample_csv), "limit": 10})
    assert dag_run.state == "success"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=home.tracking_uri)
    experiment = client.get_experiment_by_name(home.mlflow_experiment)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`airflow.run_id` = '{dag_run.run_id}'")
    run = mlflow_run(home.tracking_uri, found.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["limit"] == "10"
    assert run.data.metrics["read"] == 10 == run.data.metrics["indexed"] + run.data.metrics["quarantined"]
    assert run.data.metrics["embed_seconds"] > 0
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id, "reports")}
    assert {"reports/validation.json", "reports/profile.html", "reports/report.json"} <= artifacts


def test_bad_source_fails_the_run_and_the_mlflow_run(dag: Any, home: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.csv"
    dag_run = dag.test(run_conf={"source_uri": str(missing)})
    assert dag_run.state == "failed"
    assert make_index(home).published() is None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=home.tracking_uri)
    experiment = client.get_experiment_by_name(home.mlflow_experiment)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`airflow.run_id` = '{dag_run.run_id}'")
    assert found.info.status == "FAILED"
