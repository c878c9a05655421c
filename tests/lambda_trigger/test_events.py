"""events.py: AWS's documented sample events (S3, EventBridge, SNS in SQS) trigger the run of their object;
a malformed message can never succeed, so it is skipped with a logged reason (what is missing, never a
value), the good messages beside it are still triggered, nothing is put in batchItemFailures for it, and
the handler never raises on its input. Against the local Airflow stand-in (standin.py)."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.lambda_trigger.calls import invoke, log_lines
from tests.lambda_trigger.sample_events import eventbridge_event, s3_event, sqs_event
from tests.lambda_trigger.standin import AIRFLOW_RUN_ID, PASSWORD, AirflowStandIn


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


def test_sns_envelope_inside_sqs_is_unwrapped(env: AirflowStandIn) -> None:
    sns = {"Type": "Notification", "MessageId": "x", "Message": json.dumps(s3_event("intake-bucket", "intake/c.csv"))}
    assert invoke(sqs_event(sns)) == {
        "triggered": 1,
        "duplicate": 0,
        "skipped": 0,
        "failed": 0,
        "batchItemFailures": [],
    }


# -- malformed ------------------------------------------------------------------------------------------------
SECRET_KEY = "intake/jane-doe-2026.csv"  # an object key: it must not reach the reason of a malformed record


def without(event: dict[str, Any], *path: str | int) -> dict[str, Any]:
    """`event` with the field at `path` removed."""
    event = copy.deepcopy(event)
    parent = event
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return event


def replaced(event: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    """`event` with the field at `path` set to `value`."""
    event = copy.deepcopy(event)
    parent = event
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return event


SNS_OF_S3 = {"Type": "Notification", "MessageId": "x", "Message": json.dumps(s3_event("intake-bucket", SECRET_KEY))}

# The body of one SQS message that can never be triggered, and the reason it is skipped with.
MALFORMED_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "S3 record without s3": (
        without(s3_event("intake-bucket", SECRET_KEY), "Records", 0, "s3"),
        "s3.object is missing",
    ),
    "S3 record without an object key": (
        without(s3_event("intake-bucket", SECRET_KEY), "Records", 0, "s3", "object", "key"),
        "key is missing",
    ),
    "S3 object key that is not a string": (
        replaced(s3_event("intake-bucket", SECRET_KEY), 12345, "Records", 0, "s3", "object", "key"),
        "key is a JSON number",
    ),
    "S3 record without a bucket name": (
        without(s3_event("intake-bucket", SECRET_KEY), "Records", 0, "s3", "bucket", "name"),
        "s3.bucket.name is missing",
    ),
    "record that is not an object": ({"Records": ["aws:s3"]}, "malformed record: a JSON string, not an object"),
    "SNS notification whose Message is not a string": (
        replaced(SNS_OF_S3, {"Records": []}, "Message"),
        "malformed SNS notification: Message is a JSON object",
    ),
    "EventBridge event without detail": (
        without(eventbridge_event("intake-bucket", SECRET_KEY), "detail"),
        "malformed EventBridge event: detail.object is missing",
    ),
}


def skipped_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [line for line in log_lines(caplog) if line["outcome"] == "skipped"]


def assert_safe(reason: str) -> None:
    """A reason names the field, never the object or its values."""
    assert SECRET_KEY not in reason and "jane" not in reason and "12345" not in reason


@pytest.mark.parametrize("case", list(MALFORMED_BODIES))
def test_a_malformed_sqs_message_is_skipped_and_the_rest_of_the_batch_triggered(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    body, reason = MALFORMED_BODIES[case]
    event = sqs_event(
        s3_event("intake-bucket", "intake/one.csv"),
        body,
        s3_event("intake-bucket", "intake/two.csv"),
        message_ids=["m-1", "m-bad", "m-2"],
    )
    result = invoke(event)
    assert result == {"triggered": 2, "duplicate": 0, "skipped": 1, "failed": 0, "batchItemFailures": []}
    assert sorted(run["conf"]["key"] for run in env.runs.values()) == ["intake/one.csv", "intake/two.csv"]
    [line] = skipped_lines(caplog)
    assert line["message_id"] == "m-bad" and line["uri"] is None and reason in line["reason"], line
    assert_safe(line["reason"])


@pytest.mark.parametrize(
    ("body", "reason"),
    [({"Records": []}, "body is a JSON object, not a string"), (None, "body is a JSON null, not a string")],
)
def test_an_sqs_body_that_is_not_a_string_is_skipped(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, body: Any, reason: str
) -> None:
    event = sqs_event(s3_event("intake-bucket", "intake/one.csv"), {}, message_ids=["m-1", "m-bad"])
    event["Records"][1]["body"] = body
    assert invoke(event) == {"triggered": 1, "duplicate": 0, "skipped": 1, "failed": 0, "batchItemFailures": []}
    [line] = skipped_lines(caplog)
    assert line["message_id"] == "m-bad" and reason in line["reason"]


def test_only_the_message_that_failed_is_reported_beside_a_malformed_one(env: AirflowStandIn) -> None:
    env.refuse.add("intake/refused.csv")  # Airflow answers 400: this one failed, the malformed one never can
    malformed, _ = MALFORMED_BODIES["S3 record without s3"]
    event = sqs_event(
        malformed,
        s3_event("intake-bucket", "intake/refused.csv"),
        s3_event("intake-bucket", "intake/ok.csv"),
        message_ids=["m-bad", "m-refused", "m-ok"],
    )
    result = invoke(event)
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-refused"}]
    assert (result["triggered"], result["failed"], result["skipped"]) == (1, 1, 1)


def _direct_s3_with(bad: Any) -> dict[str, Any]:
    """A direct S3 invocation: a bad record, then a good one."""
    event = s3_event("intake-bucket", "intake/good.csv")
    event["Records"].insert(0, bad)
    return event


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            _direct_s3_with(without(s3_event("intake-bucket", SECRET_KEY), "Records", 0, "s3")["Records"][0]),
            "s3.object is missing",
        ),
        (_direct_s3_with(["not", "a", "record"]), "malformed record: a JSON array, not an object"),
        (
            _direct_s3_with({"EventSource": "aws:sns", "Sns": {"MessageId": "x"}}),
            "malformed record: Sns.Message is missing",
        ),
        (
            _direct_s3_with({"EventSource": "aws:sns", "Sns": {"Message": ["x"]}}),
            "malformed record: Sns.Message is a JSON array",
        ),
    ],
    ids=["S3 record without s3", "record that is not an object", "SNS without Message", "SNS Message not a string"],
)
def test_a_direct_invocation_skips_the_malformed_record_and_triggers_the_good_one(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, event: dict[str, Any], reason: str
) -> None:
    assert invoke(event) == {"triggered": 1, "duplicate": 0, "skipped": 1, "failed": 0}  # no raise, so no retry
    assert [run["conf"]["key"] for run in env.runs.values()] == ["intake/good.csv"]
    [line] = skipped_lines(caplog)
    assert reason in line["reason"]
    assert_safe(line["reason"])


@pytest.mark.parametrize(
    "event",
    [
        without(eventbridge_event("intake-bucket", SECRET_KEY), "detail"),
        replaced(eventbridge_event("intake-bucket", SECRET_KEY), "oops", "detail"),
        without(eventbridge_event("intake-bucket", SECRET_KEY), "detail", "object", "key"),
        ["Records"],
        "an event",
        None,
    ],
    ids=["EventBridge without detail", "detail not an object", "EventBridge without key", "array", "string", "null"],
)
def test_a_malformed_direct_event_is_skipped_not_raised(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, event: Any
) -> None:
    assert invoke(event) == {"triggered": 0, "duplicate": 0, "skipped": 1, "failed": 0}
    assert env.requests == []
    [line] = skipped_lines(caplog)
    assert "malformed" in line["reason"]
    assert_safe(line["reason"])


# -- whatever the input --------------------------------------------------------------------------------------
ODD_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", "\ud800", [], [None], {}, {"key": None}, "Records"]


def _nodes(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every node under `data`."""
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    found = [path]
    for name, child in children:
        found += _nodes(child, (*path, name))
    return found


def _mutated(event: Any, rng: random.Random) -> Any:
    """`event` with one node removed or replaced by an odd value; SQS bodies mutated inside too."""
    event = copy.deepcopy(event)
    if isinstance(event, dict) and rng.random() < 0.5:  # inside an SQS body, the way it arrives: a JSON string
        for record in event.get("Records", []):
            if isinstance(record.get("body"), str) and record["body"].startswith("{"):
                record["body"] = json.dumps(_mutated(json.loads(record["body"]), rng))
                return event
    path = rng.choice(_nodes(event))
    if not path:
        return rng.choice(ODD_VALUES)
    parent = event
    for step in path[:-1]:
        parent = parent[step]
    if rng.random() < 0.4:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(ODD_VALUES)
    return event


EVENTS: list[Callable[[], Any]] = [
    lambda: s3_event("intake-bucket", "intake/x.csv"),
    lambda: sqs_event(s3_event("intake-bucket", "intake/x.csv"), s3_event("intake-bucket", "intake/y.csv")),
    lambda: sqs_event(SNS_OF_S3),
    lambda: eventbridge_event("intake-bucket", "intake/x.json"),
]


def test_the_handler_never_raises_on_its_input(env: AirflowStandIn) -> None:
    """Hundreds of events with one field removed or changed to an odd value: every one is answered."""
    rng = random.Random(16)
    for i in range(400):
        event = _mutated(EVENTS[i % len(EVENTS)](), rng)
        result = invoke(event)
        assert result["failed"] == 0 and result.get("batchItemFailures", []) == [], event
    assert env.runs  # some mutations leave a triggerable event


def test_an_event_without_records_is_skipped_with_the_reason(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty batch, or an SQS message whose notification holds no record: a line says so, nothing is lost."""
    assert invoke({"Records": []}) == {"triggered": 0, "duplicate": 0, "skipped": 1, "failed": 0}
    event = sqs_event({"Records": []}, s3_event("intake-bucket", "intake/one.csv"), message_ids=["m-empty", "m-1"])
    assert invoke(event) == {"triggered": 1, "duplicate": 0, "skipped": 1, "failed": 0, "batchItemFailures": []}
    lines = skipped_lines(caplog)
    assert [(line["message_id"], line["reason"]) for line in lines] == [
        (None, "event has no records (Records is empty)"),
        ("m-empty", "event has no records (Records is empty)"),
    ]
