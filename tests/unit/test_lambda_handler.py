"""lambda_trigger/handler.py against AWS's documented sample events. The handler talks real HTTP to a
local server started here: a stand-in that speaks the Airflow 3 REST API (POST /auth/token, POST
/api/v2/dags/{dag_id}/dagRuns) and the MWAA invoke_rest_api protocol, and records every request."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lambda_trigger import handler
from tests.http_server import JsonHandler, LocalServer, free_port
from tests.lambda_events import LambdaContext, eventbridge_event, s3_event, sqs_event

PASSWORD = "correct horse"
AIRFLOW_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]+$")  # Airflow's default allowed_run_id_pattern


# ----------------------------------------------------------------------------- the Airflow stand-in
@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class AirflowStandIn:
    """State of the stand-in: what it was sent, and how it should answer."""

    dags: set[str] = field(default_factory=lambda: {"patient_ingest"})
    token_ttl_s: float = 3600
    script: list[int] = field(default_factory=list)  # statuses to answer dagRuns with first (503, 429...)
    refuse: set[str] = field(default_factory=set)  # object keys answered with 400
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)

    def calls(self, path_part: str) -> list[Seen]:
        return [r for r in self.requests if path_part in r.path]

    def issue_token(self) -> str:
        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        claims = {"sub": "admin", "exp": time.time() + self.token_ttl_s}
        token = f"{part({'alg': 'HS512'})}.{part(claims)}.sig{len(self.tokens)}"
        self.tokens.add(token)
        return token


class _Handler(JsonHandler):
    state: AirflowStandIn

    def do_POST(self) -> None:  # noqa: N802 (http.server calls it so)
        body = self.read_json()
        self.state.requests.append(Seen("POST", self.path, dict(self.headers), body))
        if self.path == "/auth/token":
            self._auth(body)
        elif match := re.fullmatch(r"/api/v2/dags/([^/]+)/dagRuns", self.path):
            self.send_json(*self._trigger(match.group(1), body, self.headers.get("Authorization", "")))
        elif match := re.fullmatch(r"/restapi/([^/]+)", self.path):
            self._mwaa(body)
        else:
            self.send_json(404, {"detail": "Not Found"})

    def _auth(self, body: dict[str, Any]) -> None:
        if body == {"username": "admin", "password": PASSWORD}:
            self.send_json(201, {"access_token": self.state.issue_token()})
        else:
            self.send_json(401, {"detail": "Invalid credentials"})

    def _trigger(self, dag_id: str, body: dict[str, Any], authorization: str) -> tuple[int, dict[str, Any]]:
        if authorization.removeprefix("Bearer ") not in self.state.tokens:
            return 401, {"detail": "Not authenticated"}
        if self.state.script:
            status = self.state.script.pop(0)
            return status, {"detail": f"scripted {status}"}
        if dag_id not in self.state.dags:
            return 404, {"detail": f"The Dag with dag_id: `{dag_id}` was not found"}
        if body["conf"]["key"] in self.state.refuse:
            return 400, {"detail": "refused"}
        if "logical_date" not in body:
            return 422, {"detail": [{"type": "missing", "loc": ["body", "logical_date"]}]}
        run_id = body["dag_run_id"]
        if run_id in self.state.runs:
            return 409, {"detail": f"DAG Run with run_id: `{run_id}` already exists"}
        self.state.runs[run_id] = {"dag_run_id": run_id, "conf": body["conf"], "state": "queued"}
        return 200, self.state.runs[run_id]

    def _mwaa(self, body: dict[str, Any]) -> None:
        """MWAA wraps Airflow's answer: 200 with RestApiStatusCode, or 400 RestApiClientException."""
        dag_id = body["Path"].split("/")[2]
        status, answer = self._trigger(dag_id, body["Body"], f"Bearer {self.state.issue_token()}")
        payload = {"RestApiStatusCode": status, "RestApiResponse": answer}
        if status < 300:
            self.send_json(200, payload)
        else:
            error_type = "RestApiServerException" if status >= 500 else "RestApiClientException"
            self.send_json(400 if status < 500 else 500, payload, {"x-amzn-ErrorType": error_type})


@pytest.fixture
def airflow() -> Iterator[tuple[str, AirflowStandIn]]:
    state = AirflowStandIn()
    handler.clear_caches()
    try:
        with LocalServer(_Handler, state=state) as server:
            yield server.url, state
    finally:
        handler.clear_caches()


@pytest.fixture
def env(airflow: tuple[str, AirflowStandIn], monkeypatch: pytest.MonkeyPatch) -> AirflowStandIn:
    url, state = airflow
    for name in ("MWAA_ENV_NAME", "AIRFLOW_SECRET_ARN", "DAG_ID", "S3_SUFFIXES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_BASE_URL", url + "/")
    monkeypatch.setenv("AIRFLOW_USERNAME", "admin")
    monkeypatch.setenv("AIRFLOW_PASSWORD", PASSWORD)
    monkeypatch.setenv("S3_PREFIX", "intake/")
    monkeypatch.setenv("BACKOFF_BASE_S", "0.01")
    monkeypatch.setenv("BACKOFF_MAX_S", "0.05")
    return state


def invoke(event: dict[str, Any], remaining_s: float = 30) -> dict[str, Any]:
    return handler.lambda_handler(event, LambdaContext(remaining_s))


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_trigger"]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lambda_trigger")


# ------------------------------------------------------------------------------------------- events
def test_s3_notification_triggers_the_dag_with_the_decoded_object(env: AirflowStandIn) -> None:
    event = s3_event(
        "intake-bucket", "intake/2026/pmc patients (v2).csv", size=2048, version_id="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    )
    record = event["Records"][0]
    assert "pmc+patients+%28v2%29.csv" in record["s3"]["object"]["key"]  # as S3 encodes it

    assert invoke(event) == {"triggered": 1, "duplicate": 0, "skipped": 0, "failed": 0}

    [login] = env.calls("/auth/token")
    assert login.body == {"username": "admin", "password": PASSWORD}
    [post] = env.calls("/dagRuns")
    assert post.path == "/api/v2/dags/patient_ingest/dagRuns"
    assert post.headers["Authorization"].startswith("Bearer ") and post.headers["Content-Type"] == "application/json"
    assert set(post.body) == {"dag_run_id", "logical_date", "conf"} and post.body["logical_date"] is None
    assert post.body["conf"] == {
        "source_uri": "s3://intake-bucket/intake/2026/pmc patients (v2).csv",
        "bucket": "intake-bucket",
        "key": "intake/2026/pmc patients (v2).csv",
        "version_id": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
        "etag": record["s3"]["object"]["eTag"],
        "size": 2048,
        "event_time": record["eventTime"],
    }
    assert AIRFLOW_RUN_ID.match(post.body["dag_run_id"])


def test_eventbridge_object_created_keeps_the_key_as_sent(env: AirflowStandIn) -> None:
    event = eventbridge_event("intake-bucket", "intake/a+b 1.json", version_id="IYV3p45BT0ac8hjHg1houSdS1a.Mro8e")
    assert invoke(event)["triggered"] == 1
    [post] = env.calls("/dagRuns")
    assert post.body["conf"]["key"] == "intake/a+b 1.json"  # EventBridge does not URL-encode keys
    assert post.body["conf"]["version_id"] == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    assert post.body["conf"]["event_time"] == event["time"]


def test_sqs_batch_reports_only_the_failed_messages(env: AirflowStandIn, caplog: pytest.LogCaptureFixture) -> None:
    env.refuse.add("intake/two.csv")  # Airflow answers 400 for this one: a broken request, not worth a retry
    ok = s3_event("b", "intake/one.csv")
    refused = s3_event("b", "intake/two.csv")
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-26T10:00:00Z", "Bucket": "b"}
    result = invoke(sqs_event(ok, refused, test_event, message_ids=["m-ok", "m-refused", "m-test"]))

    assert result["batchItemFailures"] == [{"itemIdentifier": "m-refused"}]
    assert (result["triggered"], result["failed"], result["skipped"]) == (1, 1, 1)
    assert len(env.calls("/dagRuns")) == 2
    failed = [line for line in log_lines(caplog) if line["outcome"] == "failed"]
    assert failed[0]["message_id"] == "m-refused" and "s3://b/intake/two.csv" in failed[0]["error"]
    assert "HTTP 400: refused" in failed[0]["error"]


def test_sns_envelope_inside_sqs_is_unwrapped(env: AirflowStandIn) -> None:
    sns = {"Type": "Notification", "MessageId": "x", "Message": json.dumps(s3_event("b", "intake/c.csv"))}
    assert invoke(sqs_event(sns)) == {
        "triggered": 1,
        "duplicate": 0,
        "skipped": 0,
        "failed": 0,
        "batchItemFailures": [],
    }


@pytest.mark.parametrize(
    ("key", "size", "event_name", "reason"),
    [
        ("elsewhere/x.csv", 10, "ObjectCreated:Put", "outside the prefix 'intake/'"),
        ("intake/notes.txt", 10, "ObjectCreated:Put", "suffix not one of .csv,.json,.jsonl,.gz"),
        ("intake/2026/", 0, "ObjectCreated:Put", "folder marker"),
        ("intake/empty.csv", 0, "ObjectCreated:Put", "empty object"),
        ("intake/gone.csv", 10, "ObjectRemoved:Delete", "event 'ObjectRemoved:Delete' is not an ObjectCreated event"),
    ],
)
def test_objects_not_to_ingest_are_skipped_with_the_reason(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, key: str, size: int, event_name: str, reason: str
) -> None:
    assert invoke(s3_event("b", key, size=size, event_name=event_name))["skipped"] == 1
    assert env.requests == []
    [line] = log_lines(caplog)
    assert line == {"outcome": "skipped", "uri": f"s3://b/{key}", "message_id": None, "reason": reason}


def test_upper_case_suffixes_and_gz_are_ingested(env: AirflowStandIn) -> None:
    assert invoke(s3_event("b", "intake/A.CSV"))["triggered"] == 1
    assert invoke(s3_event("b", "intake/a.jsonl.gz"))["triggered"] == 1


def test_log_lines_are_json_without_contents(env: AirflowStandIn, caplog: pytest.LogCaptureFixture) -> None:
    invoke(s3_event("b", "intake/x.csv"))
    [line] = log_lines(caplog)
    assert set(line) == {"outcome", "uri", "message_id", "run_id", "dag_id", "size"}
    assert line["outcome"] == "triggered" and line["uri"] == "s3://b/intake/x.csv"


# ------------------------------------------------------------------------------------------- run ids
def test_run_id_is_deterministic_safe_and_tells_uploads_apart() -> None:
    obj = handler.S3Object("b", "intake/x.csv", "v1", "e1", 1, None, "seq1")
    assert handler.run_id_for(obj) == handler.run_id_for(
        handler.S3Object("b", "intake/x.csv", "v1", "e1", 9, "t", "seq1")
    )
    others = {
        handler.run_id_for(handler.S3Object("b", "intake/x.csv", "v2", "e1", 1, None, "seq1")),
        handler.run_id_for(handler.S3Object("b", "intake/x.csv", "v1", "e1", 1, None, "seq2")),
        handler.run_id_for(handler.S3Object("b2", "intake/x.csv", "v1", "e1", 1, None, "seq1")),
        handler.run_id_for(handler.S3Object("b", "intake/x.csv", None, "e2", 1, None, "seq1")),
    }
    assert handler.run_id_for(obj) not in others and len(others) == 4
    odd = handler.S3Object("b", "intake/../weird/ключ é/" + "x" * 400 + "..csv", None, "e", 1, None, "s")
    run_id = handler.run_id_for(odd)
    assert AIRFLOW_RUN_ID.match(run_id) and ".." not in run_id and len(run_id) <= 250


def test_duplicate_delivery_is_a_success_and_makes_one_run(env: AirflowStandIn) -> None:
    event = s3_event("b", "intake/x.csv")
    assert invoke(event)["triggered"] == 1
    assert invoke(event) == {"triggered": 0, "duplicate": 1, "skipped": 0, "failed": 0}
    assert invoke(sqs_event(event))["batchItemFailures"] == []
    assert len(env.runs) == 1 and len(env.calls("/dagRuns")) == 3
    assert len({r.body["dag_run_id"] for r in env.calls("/dagRuns")}) == 1


# ------------------------------------------------------------------------------------ errors, retries
def test_5xx_and_429_are_retried_with_backoff(env: AirflowStandIn, caplog: pytest.LogCaptureFixture) -> None:
    env.script = [503, 429, 500]
    assert invoke(s3_event("b", "intake/x.csv"))["triggered"] == 1
    assert len(env.calls("/dagRuns")) == 4 and len(env.runs) == 1
    retries = [line for line in log_lines(caplog) if line["outcome"] == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    assert all(0 <= r["delay_s"] <= 0.05 for r in retries)
    assert "HTTP 429" in retries[1]["error"]


def test_retries_stop_within_the_invocation_time(env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", "1000")
    monkeypatch.setenv("BACKOFF_MAX_S", "0.3")
    env.script = [503] * 1000
    started = time.monotonic()
    with pytest.raises(
        handler.TriggerError, match=r"DAG 'patient_ingest' for s3://b/intake/x.csv .* after \d+ attempts"
    ):
        invoke(s3_event("b", "intake/x.csv"), remaining_s=3.5)  # 2 s kept back for the answer
    assert time.monotonic() - started < 3.5
    assert 2 <= len(env.calls("/dagRuns")) < 1000


def test_connection_refused_is_retried_then_fails_clearly(env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MAX_ATTEMPTS", "3")
    with pytest.raises(handler.TriggerError) as failure:
        invoke(s3_event("b", "intake/x.csv"))
    assert "after 3 attempts" in str(failure.value) and "Connection refused" in str(failure.value)


def test_other_4xx_fails_at_once_naming_dag_object_and_answer(
    env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAG_ID", "no_such_dag")
    with pytest.raises(handler.TriggerError) as failure:
        invoke(s3_event("b", "intake/x.csv"))
    message = str(failure.value)
    assert "DAG 'no_such_dag'" in message and "s3://b/intake/x.csv" in message
    assert "HTTP 404: The Dag with dag_id: `no_such_dag` was not found" in message
    assert len(env.calls("/dagRuns")) == 1


def test_wrong_password_is_one_clear_error_not_a_retry_storm(
    env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_PASSWORD", "wrong")
    events = [s3_event("b", f"intake/{i}.csv") for i in range(3)]
    result = invoke(sqs_event(*events, message_ids=["a", "b", "c"]))
    assert result["batchItemFailures"] == [{"itemIdentifier": m} for m in "abc"]
    assert len(env.calls("/auth/token")) == 1 and env.calls("/dagRuns") == []
    assert not [line for line in log_lines(caplog) if line["outcome"] == "retry"]
    with pytest.raises(
        handler.AuthError, match=r"rejected the credentials of user 'admin' \(HTTP 401: Invalid credentials\)"
    ):
        invoke(events[0])


# ---------------------------------------------------------------------------------------------- JWT
def test_token_is_reused_across_invocations(env: AirflowStandIn) -> None:
    for i in range(3):
        invoke(s3_event("b", f"intake/{i}.csv"))
    assert len(env.calls("/auth/token")) == 1 and len(env.runs) == 3


def test_token_is_renewed_shortly_before_it_expires(env: AirflowStandIn) -> None:
    env.token_ttl_s = 30  # inside the 60 s margin: never reused
    for i in range(2):
        invoke(s3_event("b", f"intake/{i}.csv"))
    assert len(env.calls("/auth/token")) == 2


def test_a_revoked_token_is_replaced_once(env: AirflowStandIn) -> None:
    invoke(s3_event("b", "intake/0.csv"))
    env.tokens.clear()  # e.g. the API server's JWT secret rotated
    assert invoke(s3_event("b", "intake/1.csv"))["triggered"] == 1
    assert len(env.calls("/auth/token")) == 2


# ------------------------------------------------------------------------------------ configuration
def test_configuration_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIRFLOW_BASE_URL", "AIRFLOW_SECRET_ARN", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD", "MWAA_ENV_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(handler.ConfigError, match="AIRFLOW_BASE_URL"):
        handler.Config.from_env()
    with pytest.raises(handler.ConfigError, match="AIRFLOW_SECRET_ARN"):
        handler.Config.from_env({"AIRFLOW_BASE_URL": "http://x"})
    with pytest.raises(handler.ConfigError, match="longer than 64"):
        handler.Config.from_env({"MWAA_ENV_NAME": "env", "DAG_ID": "d" * 60})
    config = handler.Config.from_env({"MWAA_ENV_NAME": "env", "S3_SUFFIXES": " .CSV, .Json ,"})
    assert config.suffixes == (".csv", ".json")


# ----------------------------------------------------------------------------------- secrets manager
def test_credentials_come_from_secrets_manager(env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Production path: a real (moto) Secrets Manager server holds {"username", "password"}."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        for name, value in {
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        secrets = boto3.client("secretsmanager")
        arn = secrets.create_secret(
            Name="patientinsight/airflow-api", SecretString=json.dumps({"username": "admin", "password": PASSWORD})
        )["ARN"]
        monkeypatch.delenv("AIRFLOW_USERNAME")
        monkeypatch.delenv("AIRFLOW_PASSWORD")
        monkeypatch.setenv("AIRFLOW_SECRET_ARN", arn)
        assert invoke(s3_event("b", "intake/x.csv"))["triggered"] == 1
        assert env.calls("/auth/token")[0].body == {"username": "admin", "password": PASSWORD}
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- MWAA
def mwaa_backend(url: str) -> handler.MwaaBackend:
    """The real boto3 MWAA client, sent to the stand-in (no `env.` host prefix on a local address)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "mwaa",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
    )
    return handler.MwaaBackend("patientinsight-prod", client)


def test_mwaa_backend_invokes_the_rest_api(airflow: tuple[str, AirflowStandIn]) -> None:
    url, state = airflow
    config = handler.Config(mwaa_env="patientinsight-prod", prefix="intake/", backoff_base_s=0.01)
    backend = mwaa_backend(url)
    deadline = handler.Deadline.of(LambdaContext(30), config)
    event = s3_event("b", "intake/x.csv")

    assert handler.process(event, config, backend, deadline)["triggered"] == 1
    [call] = state.requests
    assert call.path == "/restapi/patientinsight-prod"
    assert call.body["Path"] == "/dags/patient_ingest/dagRuns" and call.body["Method"] == "POST"
    assert (
        call.body["Body"]["logical_date"] is None and call.body["Body"]["conf"]["source_uri"] == "s3://b/intake/x.csv"
    )
    assert "AWS4-HMAC-SHA256" in call.headers["Authorization"]  # IAM-signed, no Airflow password

    assert handler.process(event, config, backend, deadline)["duplicate"] == 1  # 409 inside RestApiClientException
    state.script = [503]
    assert handler.process(s3_event("b", "intake/y.csv"), config, backend, deadline)["triggered"] == 1
    state.dags.clear()
    with pytest.raises(handler.TriggerError, match=r"HTTP 404: The Dag with dag_id: `patient_ingest` was not found"):
        handler.process(s3_event("b", "intake/z.csv"), config, backend, deadline)


# ------------------------------------------------------------------------------------------ the zip
def test_zip_holds_the_handler_alone_and_it_imports_without_any_package(tmp_path: Path, repo_root: Path) -> None:
    from lambda_trigger import build_zip

    out = tmp_path / "build" / "lambda_trigger.zip"
    digest = build_zip.build(out, repo_root / "lambda_trigger")
    assert build_zip.build(out, repo_root / "lambda_trigger") == digest  # reproducible bytes
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["handler.py"]
        archive.extractall(tmp_path / "unzipped")
    # -S: no site-packages at all. The module imports on the standard library alone (boto3 only when used).
    probe = "import handler; print(handler.Config.from_env({'MWAA_ENV_NAME': 'env'}).dag_id)"
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-s", "-c", probe], cwd=tmp_path / "unzipped", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == handler.Config.from_env({"MWAA_ENV_NAME": "env"}).dag_id  # as the source
