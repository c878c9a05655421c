"""airflow_rest.py against the Airflow stand-in: a wrong password is one clear error, and the JWT is reused,
renewed before it expires, and replaced once when revoked."""

from __future__ import annotations

import pytest
from answers import AuthError

from tests.lambda_trigger.calls import invoke, log_lines
from tests.lambda_trigger.sample_events import s3_event, sqs_event
from tests.lambda_trigger.standin import AirflowStandIn


def test_wrong_password_is_one_clear_error_not_a_retry_storm(
    env: AirflowStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_PASSWORD", "wrong")
    events = [s3_event("b", f"intake/{i}.csv") for i in range(3)]
    result = invoke(sqs_event(*events, message_ids=["a", "b", "c"]))
    assert result["batchItemFailures"] == [{"itemIdentifier": m} for m in "abc"]
    assert len(env.calls("/auth/token")) == 1 and env.calls("/dagRuns") == []
    assert not [line for line in log_lines(caplog) if line["outcome"] == "retry"]
    with pytest.raises(AuthError, match=r"rejected the credentials of user 'admin' \(HTTP 401: Invalid credentials\)"):
        invoke(events[0])


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
