"""auth.py: the production path reads the Airflow user from Secrets Manager (a real moto server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.lambda_trigger.calls import invoke
from tests.lambda_trigger.sample_events import s3_event
from tests.lambda_trigger.standin import PASSWORD, AirflowStandIn


def test_credentials_come_from_secrets_manager(
    env: AirflowStandIn, secrets_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production path: a real (moto) Secrets Manager server holds {"username", "password"}."""
    arn = secrets_manager.create_secret(
        Name="patientinsight/airflow-api", SecretString=json.dumps({"username": "admin", "password": PASSWORD})
    )["ARN"]
    monkeypatch.delenv("AIRFLOW_USERNAME")
    monkeypatch.delenv("AIRFLOW_PASSWORD")
    monkeypatch.setenv("AIRFLOW_SECRET_ARN", arn)
    assert invoke(s3_event("intake-bucket", "intake/x.csv"))["triggered"] == 1
    assert env.calls("/auth/token")[0].body == {"username": "admin", "password": PASSWORD}
