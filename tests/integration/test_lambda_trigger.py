"""The S3 trigger end to end: a file of real PMC-Patients records lands in a (moto) S3 intake prefix,
the Lambda handler gets the S3 event and triggers patient_ingest on a real Airflow 3 (api-server,
scheduler, dag-processor), which reads the object through its aws connection and indexes it."""

from __future__ import annotations

import csv
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import handler
import pytest
from answers import AuthError, TriggerError
from events import parse_event
from objects import run_id_for

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.ingest.lake import run_key
from tests.integration.airflow_stack import AirflowStack, running_stack
from tests.lambda_trigger.sample_events import LambdaContext, eventbridge_event, s3_event, sqs_event

pytestmark = [pytest.mark.integration, pytest.mark.realdata, pytest.mark.timeout(1200)]

DAG_ID = "patient_ingest"
BUCKET = "patientinsight-intake"
ROWS = 30


# ------------------------------------------------------------------------------------------ services
def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def airflow(
    repo_root: Path, real_data_dir: Path, moto_url: str, tmp_path_factory: pytest.TempPathFactory, request: Any
) -> Iterator[AirflowStack]:
    """One real Airflow for the module; the aws connection points at moto (dummy keys), from the environment.
    (`real_data_dir` first: without the real records the module skips before anything starts.)"""
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_url, "region_name": "us-east-1"},
    }
    env = {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection)}
    with running_stack(repo_root, tmp_path_factory.mktemp("airflow-stack"), request, DAG_ID, env) as stack:
        yield stack


@dataclass(frozen=True)
class Upload:
    key: str
    size: int
    etag: str
    version_id: str
    uids: list[str]

    def event(self, sequencer: str = "0065A1B2C3D4E5F601") -> dict[str, Any]:
        return s3_event(BUCKET, self.key, self.size, self.etag, self.version_id, sequencer)

    @property
    def uri(self) -> str:
        return f"s3://{BUCKET}/{self.key}"


@pytest.fixture(scope="module")
def upload(real_data_dir: Path, moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Upload:
    """The first 30 real records as a CSV in the versioned intake bucket, under a key with a space."""
    with (real_data_dir / "PMC-Patients-sample-1000.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [row for _, row in zip(range(ROWS), reader, strict=False)]
    path = tmp_path_factory.mktemp("upload") / "records.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    s3 = s3_client(moto_url)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key = "intake/2026-11/pmc patients first 30.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    head = s3.head_object(Bucket=BUCKET, Key=key)
    return Upload(
        key, head["ContentLength"], head["ETag"].strip('"'), head["VersionId"], [r["patient_uid"] for r in rows]
    )


def configure_lambda(airflow: AirflowStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The function's configuration for the development backend (user and password from the environment)."""
    for name, value in {
        "AIRFLOW_BASE_URL": airflow.base_url,
        "AIRFLOW_USERNAME": airflow.username,
        "AIRFLOW_PASSWORD": airflow.password,
        "DAG_ID": DAG_ID,
        "S3_PREFIX": "intake/",
        "MAX_WAIT_S": "30",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MWAA_ENV_NAME", raising=False)
    monkeypatch.delenv("AIRFLOW_SECRET_ARN", raising=False)


@pytest.fixture
def lambda_env(airflow: AirflowStack, monkeypatch: pytest.MonkeyPatch) -> None:
    configure_lambda(airflow, monkeypatch)


@dataclass(frozen=True)
class Delivered:
    result: dict[str, Any]
    run: dict[str, Any]


@pytest.fixture(scope="module")
def delivered(airflow: AirflowStack, upload: Upload) -> Delivered:
    """The upload delivered once and its run finished. Every test builds on it, so none depends on the
    order pytest-randomly picks (and none stops the api-server while the run's tasks still talk to it)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        configure_lambda(airflow, monkeypatch)
        result = handler.lambda_handler(upload.event(), LambdaContext(60))
    made = runs(airflow)
    assert len(made) == 1, made
    airflow.wait_for_run(DAG_ID, made[0]["dag_run_id"], timeout_s=900)
    return Delivered(result, made[0])


def runs(airflow: AirflowStack) -> list[dict[str, Any]]:
    answer = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")
    assert answer["total_entries"] == len(answer["dag_runs"])
    return list(answer["dag_runs"])


def outcomes(caplog: pytest.LogCaptureFixture, outcome: str) -> list[dict[str, Any]]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_trigger"]
    return [line for line in lines if line["outcome"] == outcome]


def access_log_count(airflow: AirflowStack, path: str, status: int, at_least: int = 0, timeout_s: float = 15) -> int:
    """Requests the api-server logged: what Airflow itself saw, not what the handler says it sent.
    Its log reaches the file a little after the answer: wait up to `timeout_s` for `at_least` lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = airflow.log_path("api-server").read_text(errors="replace")
        count = sum(f"path={path} " in line and f"status_code={status}" in line for line in text.splitlines())
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------- tests
@pytest.mark.usefixtures("lambda_env")
def test_upload_triggers_exactly_one_run_that_indexes_the_object(
    airflow: AirflowStack, upload: Upload, delivered: Delivered
) -> None:
    assert delivered.result == {"triggered": 1, "duplicate": 0, "skipped": 0, "failed": 0}

    [run] = runs(airflow)
    assert run["dag_run_id"] == delivered.run["dag_run_id"]
    obj = next(i.obj for i in parse_event(upload.event()))
    assert obj is not None and obj.key == upload.key  # '+' in the event decoded to spaces
    assert run["dag_run_id"] == run_id_for(obj)
    assert run["logical_date"] is None
    assert run["conf"] == {
        "source_uri": upload.uri,
        "bucket": BUCKET,
        "key": upload.key,
        "version_id": upload.version_id,
        "etag": upload.etag,
        "size": upload.size,
        "event_time": "2019-09-03T19:37:27.192Z",
    }

    assert run["state"] == "success"
    run_dir = airflow.patientinsight_home / "lake" / "runs" / run_key(run["dag_run_id"])
    validation = json.loads((run_dir / "validation.json").read_text())
    assert validation["source"] == upload.uri  # read from S3 through the aws connection, not a local copy
    report = json.loads((run_dir / "report.json").read_text())
    assert report["read"] == ROWS == report["indexed"] + report["quarantined"]
    assert report["indexed"] >= ROWS - 2

    index = EmbeddedIndex(airflow.patientinsight_home / "index")
    version = index.published()
    assert version == report["index_version"]
    hashes = index.open(version).hashes()
    assert len(hashes) == report["indexed"] == index.open(version).count()
    assert set(hashes) <= set(upload.uids)


@pytest.mark.usefixtures("lambda_env")
def test_the_same_upload_delivered_again_makes_no_second_run(
    airflow: AirflowStack, upload: Upload, delivered: Delivered, caplog: pytest.LogCaptureFixture
) -> None:
    before = runs(airflow)
    assert len(before) == 1
    caplog.set_level(logging.INFO, logger="lambda_trigger")

    again = handler.lambda_handler(upload.event(), LambdaContext(60))
    assert again == {"triggered": 0, "duplicate": 1, "skipped": 0, "failed": 0}
    # The same notification through SQS, and the same upload as EventBridge reports it: same run id.
    via_sqs = handler.lambda_handler(sqs_event(upload.event()), LambdaContext(60))
    assert via_sqs["duplicate"] == 1 and via_sqs["batchItemFailures"] == []
    bridge = eventbridge_event(BUCKET, upload.key, upload.size, upload.etag, upload.version_id, "0065A1B2C3D4E5F601")
    assert handler.lambda_handler(bridge, LambdaContext(60))["duplicate"] == 1

    assert [r["dag_run_id"] for r in runs(airflow)] == [before[0]["dag_run_id"]]
    assert len(outcomes(caplog, "duplicate")) == 3
    assert access_log_count(airflow, f"/api/v2/dags/{DAG_ID}/dagRuns", 409, at_least=3) >= 3


@pytest.mark.usefixtures("lambda_env")
def test_wrong_password_fails_at_once_with_a_clear_error(
    airflow: AirflowStack,
    upload: Upload,
    delivered: Delivered,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AIRFLOW_PASSWORD", "not-the-password")
    caplog.set_level(logging.INFO, logger="lambda_trigger")
    rejected_before = access_log_count(airflow, "/auth/token", 401)

    with pytest.raises(AuthError, match=r"rejected the credentials of user 'admin' \(HTTP 401"):
        handler.lambda_handler(upload.event(sequencer="0065A1B2C3D4E5F6AA"), LambdaContext(60))
    # An SQS batch of two: both messages fail, with one login attempt for the whole batch.
    batch = sqs_event(upload.event(sequencer="0065A1B2C3D4E5F6AB"), upload.event(sequencer="0065A1B2C3D4E5F6AC"))
    result = handler.lambda_handler(batch, LambdaContext(60))
    assert result["failed"] == 2
    assert result["batchItemFailures"] == [{"itemIdentifier": r["messageId"]} for r in batch["Records"]]

    rejected = access_log_count(airflow, "/auth/token", 401, at_least=rejected_before + 2) - rejected_before
    assert rejected == 2  # one per invocation
    assert outcomes(caplog, "retry") == []
    assert len(runs(airflow)) == 1


@pytest.mark.usefixtures("lambda_env")
def test_api_server_down_retries_then_fails_with_a_clear_error(
    airflow: AirflowStack,
    upload: Upload,
    delivered: Delivered,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("BACKOFF_BASE_S", "0.2")
    monkeypatch.setenv("BACKOFF_MAX_S", "1")
    caplog.set_level(logging.INFO, logger="lambda_trigger")
    event = upload.event(sequencer=f"0065A1B2{uuid.uuid4().hex[:10].upper()}")  # a new upload: would be a new run
    airflow.stop_component("api-server")
    try:
        with pytest.raises(TriggerError) as failure:
            handler.lambda_handler(event, LambdaContext(8))  # 8 s of invocation left
        message = str(failure.value)
        assert f"DAG '{DAG_ID}'" in message and upload.uri in message
        assert "Airflow unreachable or failing after" in message and "Connection refused" in message
        retries = outcomes(caplog, "retry")
        assert len(retries) >= 2
        assert [r["attempt"] for r in retries] == list(range(1, len(retries) + 1))
        assert outcomes(caplog, "failed")[0]["uri"] == upload.uri
    finally:
        airflow.start_component("api-server")
        airflow.wait_healthy(120)
    assert len(runs(airflow)) == 1  # nothing got through while it was down
