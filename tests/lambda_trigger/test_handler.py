"""handler.py, whatever comes in and whatever answers: every message is triggered, a duplicate, skipped
with a logged reason, or listed in batchItemFailures, or the invocation raises so that all of it comes back
(SQS retries the batch, Lambda the direct event). Never none of these. Hypothesis draws the events (S3,
SQS with any messageId or none, SNS, EventBridge, malformed shapes) and what the stand-in answers
instead of Airflow (401, 403, 404, 409, 5xx, pages that are not Airflow's, no answer at all)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from answers import TriggerError
from auth import clear_caches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http_server import free_port
from tests.lambda_trigger.calls import invoke, log_lines
from tests.lambda_trigger.sample_events import SQS_MESSAGE_SAMPLE, eventbridge_event, s3_event
from tests.lambda_trigger.standin import FAULTS, AirflowStandIn

OUTCOMES = {"triggered", "duplicate", "skipped", "failed"}
MISSING = object()  # a messageId left out altogether

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Few objects, so that the same one comes twice (a duplicate). Half of them are objects to ingest, the others
# drawn from anything: bucket names S3 does not allow, keys to skip, events other than ObjectCreated.
good = st.fixed_dictionaries(
    {
        "bucket": st.sampled_from(["intake-bucket", "other.bucket-2"]),
        "key": st.sampled_from(["intake/a.csv", "intake/b c.jsonl"]),
        "size": st.sampled_from([None, 12]),
        "sequencer": st.sampled_from([None, "0A", "0B"]),
    }
)
odd = st.fixed_dictionaries(
    {
        "bucket": st.sampled_from(["intake-bucket", "", "intake/bucket", "Legacy_Name", "ab"]),
        "key": st.sampled_from(["intake/a.csv", "intake/dir/", "elsewhere/x.csv", "intake/x.txt"]),
        "size": st.sampled_from([None, 0, 12]),
        "sequencer": st.sampled_from([None, "0A"]),
    }
)
created = good | odd
s3_records = st.builds(lambda obj: s3_event(**obj)["Records"][0], good) | st.builds(
    lambda obj, name: s3_event(**obj, event_name=name)["Records"][0],
    odd,
    st.sampled_from(["ObjectCreated:CompleteMultipartUpload", "ObjectRemoved:Delete"]),
)
s3_notifications = st.lists(s3_records, min_size=1, max_size=3).map(lambda records: {"Records": records})
notifications = s3_notifications | st.one_of(
    st.builds(lambda obj: eventbridge_event(**obj), created),
    s3_notifications.map(lambda n: {"Type": "Notification", "MessageId": "x", "Message": json.dumps(n)}),  # SNS
    st.just({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "intake-bucket"}),
    st.just({"Records": []}),
    json_values,
)
# Two in three a messageId SQS would send; else none, or not a string, or empty.
message_ids = st.uuids().map(str) | st.text(min_size=1, max_size=4) | st.sampled_from([MISSING, None, "", 7, ["m"]])


@st.composite
def sqs_messages(draw: st.DrawFn) -> dict[str, Any]:
    message = {**SQS_MESSAGE_SAMPLE, "body": draw(notifications.map(json.dumps) | st.text(max_size=8))}
    message_id = draw(message_ids)
    if message_id is MISSING:
        del message["messageId"]
    else:
        message["messageId"] = message_id
    return message


sns_records = s3_notifications.map(lambda n: {"EventSource": "aws:sns", "Sns": {"Message": json.dumps(n)}})
events = st.one_of(
    st.lists(sqs_messages(), min_size=1, max_size=4).map(lambda records: {"Records": records}),
    # Malformed shapes: SQS messages beside direct records, records of any JSON, no record at all.
    st.lists(sqs_messages() | s3_records | sns_records | json_values, max_size=4).map(lambda r: {"Records": r}),
    st.one_of(s3_notifications, st.builds(lambda obj: eventbridge_event(**obj), created), json_values),  # direct
)
# One time in three, the first answers of the stand-in are faults, one after the other; else Airflow's.
some_faults = st.lists(st.sampled_from(sorted(FAULTS)).map(FAULTS.__getitem__), min_size=1, max_size=3)
faults = st.sampled_from([False, False, True]).flatmap(lambda faulty: some_faults if faulty else st.just([]))
down = st.sampled_from([False] * 3 + [True])  # one time in four, Airflow refuses the connection


def message_ids_of(event: Any) -> set[str]:
    """The messageIds of the SQS messages of an event: the names batchItemFailures can give."""
    records = event.get("Records") if isinstance(event, dict) else None
    found = [r.get("messageId") for r in records or [] if isinstance(r, dict) and r.get("eventSource") == "aws:sqs"]
    return {m for m in found if isinstance(m, str) and m}


@settings(
    max_examples=300,
    deadline=None,  # an example waits for retries; no timing is asserted
    database=None,
    # The stand-in and the environment are the test's own, made afresh for each example below.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event=events, login_faults=faults, trigger_faults=faults, airflow_down=down)
def test_every_message_is_triggered_skipped_or_retried(
    airflow: tuple[str, AirflowStandIn],
    env: AirflowStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    event: Any,
    login_faults: list[Any],
    trigger_faults: list[Any],
    airflow_down: bool,
) -> None:
    url, _ = airflow
    env.reset()
    env.login_faults, env.trigger_faults = login_faults, trigger_faults
    clear_caches()
    caplog.clear()
    monkeypatch.setenv("MAX_ATTEMPTS", "3")  # with the fixture's short backoff: a fault costs little time
    monkeypatch.setenv("AIRFLOW_BASE_URL", f"http://127.0.0.1:{free_port()}" if airflow_down else url)

    try:
        result, raised = invoke(event), None
    except TriggerError as exc:  # anything else escaping fails the test: it would say nothing clear
        result, raised = None, exc
    lines = [line for line in log_lines(caplog) if line["outcome"] != "retry"]

    assert {line["outcome"] for line in lines} <= OUTCOMES
    assert all(line["reason"] for line in lines if line["outcome"] == "skipped")
    records = event.get("Records") if isinstance(event, dict) else None
    assert len(lines) >= (len(records) if isinstance(records, list) and records else 1)  # one line or more each
    for message_id in message_ids_of(event):
        assert any(line["message_id"] == message_id for line in lines), message_id
    triggered = {line["run_id"] for line in lines if line["outcome"] == "triggered"}
    assert triggered <= set(env.runs)  # "triggered" only when Airflow has the run
    failed = [line for line in lines if line["outcome"] == "failed"]

    if raised is not None:  # all of it comes back: only right when a failure has no messageId to be listed by
        assert any(not line["message_id"] for line in failed)
        return
    assert result is not None
    counts = {outcome: sum(line["outcome"] == outcome for line in lines) for outcome in OUTCOMES}
    assert {outcome: result[outcome] for outcome in OUTCOMES} == counts
    listed = [failure["itemIdentifier"] for failure in result.get("batchItemFailures", [])]
    assert len(listed) == len(set(listed))
    # Every failed message is listed by its messageId (a failure without one would have raised).
    assert set(listed) == {line["message_id"] for line in failed} and set(listed) <= message_ids_of(event)
