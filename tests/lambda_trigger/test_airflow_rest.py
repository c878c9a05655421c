"""airflow_rest.py against the Airflow stand-in: a wrong password is one clear error, and the JWT is reused,
renewed before it expires, and replaced once when revoked."""

from __future__ import annotations

import pytest
from answers import AuthError

from tests.lambda_trigger.calls import invoke, log_lines
from tests.lambda_trigger.sample_events import s3_event, sqs_event
from tests.lambda_trigger.standin import FAULTS, AirflowStandIn


def test_wrong_password_is_one_clear_error_not_a_retry_storm(
    env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_PASSWORD", "wrong")
    events = [s3_event("intake-bucket", f"intake/{i}.csv") for i in range(3)]
    result = invoke(sqs_event(*events, message_ids=["a", "b", "c"]))
    assert result["batchItemFailures"] == [{"itemIdentifier": m} for m in "abc"]
    assert len(env.calls("/auth/token")) == 1 and env.calls("/dagRuns") == []
    assert not [line for line in log_lines(caplog) if line["outcome"] == "retry"]
    with pytest.raises(AuthError, match=r"rejected the credentials of user 'admin' \(HTTP 401: Invalid credentials\)"):
        invoke(events[0])


def test_token_is_reused_across_invocations(env: AirflowStandIn) -> None:
    for i in range(3):
        invoke(s3_event("intake-bucket", f"intake/{i}.csv"))
    assert len(env.calls("/auth/token")) == 1 and len(env.runs) == 3


def test_token_is_renewed_shortly_before_it_expires(env: AirflowStandIn) -> None:
    env.token_ttl_s = 30  # inside the 60 s margin: never reused
    for i in range(2):
        invoke(s3_event("intake-bucket", f"intake/{i}.csv"))
    assert len(env.calls("/auth/token")) == 2


def test_a_revoked_token_is_replaced_once(env: AirflowStandIn) -> None:
    invoke(s3_event("intake-bucket", "intake/0.csv"))
    env.tokens.clear()  # e.g. the API server's JWT secret rotated
    assert invoke(s3_event("intake-bucket", "intake/1.csv"))["triggered"] == 1
    assert len(env.calls("/auth/token")) == 2


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("200 HTML", "answered HTTP 200 without an access_token (<!doctype html>"),
        ("200 not JSON", "answered HTTP 200 without an access_token (OK)"),
        ("200 JSON array", "answered HTTP 200 without an access_token"),
        ("201 without token", 'answered HTTP 201 without an access_token ({"token_type": "bearer"})'),
        ("404", "HTTP 404: Not Found; check AIRFLOW_BASE_URL"),
    ],
)
def test_a_login_answer_without_a_token_fails_every_message_with_one_clear_error(
    airflow: tuple[str, AirflowStandIn], env: AirflowStandIn, caplog: pytest.LogCaptureFixture, fault: str, said: str
) -> None:
    """A wrong base URL or a proxy's page: each message failed, naming the URL and what came back; one login."""
    url, _ = airflow
    env.login_faults = [FAULTS[fault]]
    events = [s3_event("intake-bucket", f"intake/{i}.csv") for i in range(3)]
    result = invoke(sqs_event(*events, message_ids=["a", "b", "c"]))
    assert result["batchItemFailures"] == [{"itemIdentifier": m} for m in "abc"]
    assert len(env.calls("/auth/token")) == 1 and env.calls("/dagRuns") == []
    failed = [line for line in log_lines(caplog) if line["outcome"] == "failed"]
    assert len(failed) == 3
    assert all(f"POST {url}/auth/token" in line["error"] and said in line["error"] for line in failed), failed
    env.login_faults = [FAULTS[fault]]
    with pytest.raises(AuthError, match=f"POST {url}/auth/token"):  # a direct invocation: Lambda retries it
        invoke(events[0])


@pytest.mark.parametrize(
    ("fault", "status"), [("200 HTML", 200), ("200 not JSON", 200), ("200 JSON array", 200), ("409 HTML", 409)]
)
def test_a_trigger_answer_that_is_not_airflows_fails_the_message(
    airflow: tuple[str, AirflowStandIn],
    env: AirflowStandIn,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    status: int,
) -> None:
    """A 200 or 409 that is not Airflow's JSON triggered nothing: failed, so SQS delivers it again."""
    url, _ = airflow
    env.trigger_faults = [FAULTS[fault]]
    result = invoke(sqs_event(s3_event("intake-bucket", "intake/x.csv"), message_ids=["m"]))
    assert result["batchItemFailures"] == [{"itemIdentifier": "m"}] and env.runs == {}
    [line] = log_lines(caplog)
    assert line["outcome"] == "failed"
    said = f"POST {url}/api/v2/dags/patient_ingest/dagRuns answered HTTP {status} without Airflow's JSON answer"
    assert said in line["error"] and "s3://intake-bucket/intake/x.csv" in line["error"]


@pytest.mark.parametrize("fault", ["not HTTP", "hang-up", "503 cut short"])
@pytest.mark.parametrize("call", ["/auth/token", "/dagRuns"])
def test_an_answer_that_is_no_http_answer_is_retried(
    env: AirflowStandIn, caplog: pytest.LogCaptureFixture, fault: str, call: str
) -> None:
    if call == "/auth/token":
        env.login_faults = [FAULTS[fault]]
    else:
        env.trigger_faults = [FAULTS[fault]]
    assert invoke(s3_event("intake-bucket", "intake/x.csv"))["triggered"] == 1
    [retry] = [line for line in log_lines(caplog) if line["outcome"] == "retry"]
    assert retry["attempt"] == 1 and call in retry["error"]
