"""objects.py: which objects are skipped, and why (a log line each, no request), and the run id of an upload."""

from __future__ import annotations

import pytest
from events import S3Object
from objects import BAD_BUCKET, run_id_for

from tests.lambda_trigger.calls import invoke, log_lines
from tests.lambda_trigger.sample_events import eventbridge_event, s3_event
from tests.lambda_trigger.standin import AIRFLOW_RUN_ID, AirflowStandIn


@pytest.mark.parametrize(
    ("key", "size", "event_name", "reason"),
    [
        ("elsewhere/x.csv", 10, "ObjectCreated:Put", "outside the prefix 'intake/'"),
        ("intake/notes.txt", 10, "ObjectCreated:Put", "suffix not one of .csv,.json,.jsonl,.ndjson,.gz"),
        ("intake/2026/", 0, "ObjectCreated:Put", "folder marker"),
        ("intake/empty.csv", 0, "ObjectCreated:Put", "empty object"),
        ("intake/gone.csv", 10, "ObjectRemoved:Delete", "event 'ObjectRemoved:Delete' is not an ObjectCreated event"),
    ],
)
def test_objects_not_to_ingest_are_skipped_with_the_reason(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, key: str, size: int, event_name: str, reason: str
) -> None:
    assert invoke(s3_event("intake-bucket", key, size=size, event_name=event_name))["skipped"] == 1
    assert env.requests == []
    [line] = log_lines(caplog)
    assert line == {"outcome": "skipped", "uri": f"s3://intake-bucket/{key}", "message_id": None, "reason": reason}


def test_upper_case_suffixes_and_gz_are_ingested(env: AirflowStandIn) -> None:
    assert invoke(s3_event("intake-bucket", "intake/A.CSV"))["triggered"] == 1
    assert invoke(s3_event("intake-bucket", "intake/a.jsonl.gz"))["triggered"] == 1
    assert invoke(s3_event("intake-bucket", "intake/a.NDJSON"))["triggered"] == 1  # read by ingest, so triggered


def test_run_id_is_deterministic_safe_and_tells_uploads_apart() -> None:
    obj = S3Object("b", "intake/x.csv", "v1", "e1", 1, None, "seq1")
    assert run_id_for(obj) == run_id_for(S3Object("b", "intake/x.csv", "v1", "e1", 9, "t", "seq1"))
    others = {
        run_id_for(S3Object("b", "intake/x.csv", "v2", "e1", 1, None, "seq1")),
        run_id_for(S3Object("b", "intake/x.csv", "v1", "e1", 1, None, "seq2")),
        run_id_for(S3Object("b2", "intake/x.csv", "v1", "e1", 1, None, "seq1")),
        run_id_for(S3Object("b", "intake/x.csv", None, "e2", 1, None, "seq1")),
    }
    assert run_id_for(obj) not in others and len(others) == 4
    odd = S3Object("b", "intake/../weird/ключ é/" + "x" * 400 + "..csv", None, "e", 1, None, "s")
    run_id = run_id_for(odd)
    assert AIRFLOW_RUN_ID.match(run_id) and ".." not in run_id and len(run_id) <= 250


@pytest.mark.parametrize(
    "bucket",
    ["", "ab", "x" * 256, "intake/bucket", "intake bucket", "intake\tbucket", "ключ-bucket", "intake:bucket"],
)
def test_an_invalid_bucket_name_is_skipped_with_the_reason(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, bucket: str
) -> None:
    """No such bucket can hold an upload: a forged or garbled event, skipped and said so, never triggered."""
    assert invoke(s3_event(bucket, "intake/x.csv"))["skipped"] == 1
    assert invoke(eventbridge_event(bucket, "intake/x.csv"))["skipped"] == 1
    assert env.requests == []
    lines = log_lines(caplog)
    assert [line["reason"] for line in lines] == [BAD_BUCKET] * 2


@pytest.mark.parametrize(
    "bucket",
    # Today's rules, then legacy us-east-1 names (before March 2018), which still send events.
    ["abc", "x" * 63, "intake.bucket-2", "0intake9", "Intake-Bucket", "intake_bucket", "x" * 255, "-legacy."],
)
def test_valid_bucket_names_are_ingested(env: AirflowStandIn, bucket: str) -> None:
    assert invoke(s3_event(bucket, "intake/x.csv"))["triggered"] == 1
