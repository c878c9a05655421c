"""triggering.py: one run per object, failed SQS messages reported, redeliveries a success, retries with
backoff within the invocation's time, and one JSON log line per decision; against the Airflow stand-in."""

from __future__ import annotations

import time

import pytest
from answers import TriggerError

from tests.http_server import free_port
from tests.lambda_trigger.calls import invoke, log_lines
from tests.lambda_trigger.sample_events import s3_event, sqs_event
from tests.lambda_trigger.standin import AirflowStandIn


def test_sqs_batch_reports_only_the_failed_messages(env: AirflowStandIn, caplog: pytest.LogCaptureFixture) -> None:
    env.refuse.add("intake/two.csv")  # Airflow answers 400 for this one: a broken request, not worth a retry
    ok = s3_event("intake-bucket", "intake/one.csv")
    refused = s3_event("intake-bucket", "intake/two.csv")
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-26T10:00:00Z", "Bucket": "b"}
    result = invoke(sqs_event(ok, refused, test_event, message_ids=["m-ok", "m-refused", "m-test"]))

    assert result["batchItemFailures"] == [{"itemIdentifier": "m-refused"}]
    assert (result["triggered"], result["failed"], result["skipped"]) == (1, 1, 1)
    assert len(env.calls("/dagRuns")) == 2
    failed = [line for line in log_lines(caplog) if line["outcome"] == "failed"]
    assert failed[0]["message_id"] == "m-refused" and "s3://intake-bucket/intake/two.csv" in failed[0]["error"]
    assert "HTTP 400: refused" in failed[0]["error"]


def test_log_lines_are_json_without_contents(env: AirflowStandIn, caplog: pytest.LogCaptureFixture) -> None:
    invoke(s3_event("intake-bucket", "intake/x.csv"))
    [line] = log_lines(caplog)
    assert set(line) == {"outcome", "uri", "message_id", "run_id", "dag_id", "size"}
    assert line["outcome"] == "triggered" and line["uri"] == "s3://intake-bucket/intake/x.csv"


def test_duplicate_delivery_is_a_success_and_makes_one_run(env: AirflowStandIn) -> None:
    event = s3_event("intake-bucket", "intake/x.csv")
    assert invoke(event)["triggered"] == 1
    assert invoke(event) == {"triggered": 0, "duplicate": 1, "skipped": 0, "failed": 0}
    assert invoke(sqs_event(event))["batchItemFailures"] == []
    assert len(env.runs) == 1 and len(env.calls("/dagRuns")) == 3
    assert len({r.body["dag_run_id"] for r in env.calls("/dagRuns")}) == 1


def test_5xx_and_429_are_retried_with_backoff(env: AirflowStandIn, caplog: pytest.LogCaptureFixture) -> None:
    env.script = [503, 429, 500]
    assert invoke(s3_event("intake-bucket", "intake/x.csv"))["triggered"] == 1
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
        TriggerError, match=r"DAG 'patient_ingest' for s3://intake-bucket/intake/x.csv .* after \d+ attempts"
    ):
        invoke(s3_event("intake-bucket", "intake/x.csv"), remaining_s=3.5)  # 2 s kept back for the answer
    assert time.monotonic() - started < 3.5
    assert 2 <= len(env.calls("/dagRuns")) < 1000


def test_connection_refused_is_retried_then_fails_clearly(env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MAX_ATTEMPTS", "3")
    with pytest.raises(TriggerError) as failure:
        invoke(s3_event("intake-bucket", "intake/x.csv"))
    assert "after 3 attempts" in str(failure.value) and "Connection refused" in str(failure.value)


def test_other_4xx_fails_at_once_naming_dag_object_and_answer(
    env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAG_ID", "no_such_dag")
    with pytest.raises(TriggerError) as failure:
        invoke(s3_event("intake-bucket", "intake/x.csv"))
    message = str(failure.value)
    assert "DAG 'no_such_dag'" in message and "s3://intake-bucket/intake/x.csv" in message
    assert "HTTP 404: The Dag with dag_id: `no_such_dag` was not found" in message
    assert len(env.calls("/dagRuns")) == 1


MISSING = object()  # the messageId left out altogether


@pytest.mark.parametrize(
    "message_id", [MISSING, None, 7, "", ["m-refused"]], ids=["missing", "null", "number", "empty", "array"]
)
def test_a_failed_message_without_a_message_id_fails_the_whole_batch(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, message_id: object
) -> None:
    """batchItemFailures can only name a message by its messageId: without one, raising is the only way SQS
    retries it. The others come back too, and what was triggered is then a duplicate."""
    env.refuse.add("intake/refused.csv")
    ok, refused = s3_event("intake-bucket", "intake/ok.csv"), s3_event("intake-bucket", "intake/refused.csv")
    event = sqs_event(ok, refused, message_ids=["m-ok", "m-refused"])
    if message_id is MISSING:
        del event["Records"][1]["messageId"]
    else:
        event["Records"][1]["messageId"] = message_id
    with pytest.raises(TriggerError, match=r"no messageId .* SQS retries every message") as failure:
        invoke(event)
    assert "s3://intake-bucket/intake/refused.csv" in str(failure.value) and "HTTP 400: refused" in str(failure.value)
    assert len(env.runs) == 1
    assert invoke(sqs_event(ok, message_ids=["m-ok"]))["duplicate"] == 1


def test_a_message_without_a_message_id_that_did_not_fail_needs_no_retry(env: AirflowStandIn) -> None:
    event = sqs_event(s3_event("intake-bucket", "intake/ok.csv"), {"Records": ["x"]})
    for record in event["Records"]:
        del record["messageId"]
    assert invoke(event) == {"triggered": 1, "duplicate": 0, "skipped": 1, "failed": 0, "batchItemFailures": []}


def test_a_failed_s3_record_in_an_sqs_batch_fails_the_whole_batch(env: AirflowStandIn) -> None:
    """A record of a direct S3 notification beside SQS messages has no messageId either."""
    env.refuse.add("intake/refused.csv")
    event = sqs_event(s3_event("intake-bucket", "intake/ok.csv"))
    event["Records"] += s3_event("intake-bucket", "intake/refused.csv")["Records"]
    with pytest.raises(TriggerError, match="no messageId"):
        invoke(event)
