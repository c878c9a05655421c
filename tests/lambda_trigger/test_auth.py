"""auth.py: the production path reads the Airflow user from Secrets Manager (a real moto server)."""

from __future__ import annotations

import json

import pytest

from tests.lambda_trigger.calls import invoke
from tests.lambda_trigger.sample_events import s3_event
from tests.lambda_trigger.standin import PASSWORD, AirflowStandIn


def test_credentials_come_from_secrets_manager(
    env: AirflowStandIn, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production path: a real (moto) Secrets Manager server holds {"username", "password"}."""
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_url,
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
    assert invoke(s3_event("intake-bucket", "intake/x.csv"))["triggered"] == 1
    assert env.calls("/auth/token")[0].body == {"username": "admin", "password": PASSWORD}
