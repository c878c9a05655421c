"""patient_ingest's embedding shards on a real Airflow 3 with the LocalExecutor (the project's own
configuration and airflow_settings.yaml): one mapped `embed` task per shard, in the `embedding` pool,
and one version built from all of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.ingest.lake import run_key
from tests.helpers import read_rows
from tests.integration.airflow_stack import AirflowStack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

DAG_ID = "patient_ingest"


@pytest.fixture(scope="module")
def airflow(
    repo_root: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AirflowStack]:
    with running_stack(repo_root, tmp_path_factory.mktemp("sharded-stack"), request, DAG_ID) as stack:
        yield stack


def test_shards_run_as_mapped_tasks_in_the_embedding_pool(airflow: AirflowStack, sample_csv: Path) -> None:
    pool = airflow.api("GET", "/api/v2/pools/embedding")  # from airflow_settings.yaml
    assert pool["slots"] >= 1

    conf = {"source_uri": str(sample_csv), "shard_size": 20}
    run = airflow.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    airflow.wait_for_run(DAG_ID, run["dag_run_id"], timeout_s=900)

    report = json.loads(
        (airflow.patientinsight_home / "lake" / "runs" / run_key(run["dag_run_id"]) / "report.json").read_text()
    )
    rows = len(read_rows(sample_csv))
    assert report["read"] == rows == report["indexed"] + report["quarantined"]
    assert report["embedded"] == report["indexed"] and report["published"]
    shards = -(-report["indexed"] // 20)

    mapped = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/embed/listMapped")
    instances = mapped["task_instances"]
    assert sorted(t["map_index"] for t in instances) == list(range(shards))
    assert {t["state"] for t in instances} == {"success"}
    assert {t["pool"] for t in instances} == {"embedding"}
    assert sorted(t["rendered_map_index"] for t in instances) == sorted(f"shard {n}" for n in range(shards))

    index = EmbeddedIndex(airflow.patientinsight_home / "index")
    assert index.published() == report["index_version"]
    assert index.open(report["index_version"]).count() == report["indexed"]
