"""The lambda_trigger tests' fixtures: the Airflow stand-in on a local port, the function's environment
pointed at it, and the handler's log lines captured. The modules of lambda_trigger/ are imported by their
plain names, as at the zip's root (tests/conftest.py puts the folder on sys.path)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auth import clear_caches

from tests.http_server import LocalServer
from tests.lambda_trigger.standin import PASSWORD, AirflowApi, AirflowStandIn


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for tests/conftest.py's autouse one: the function uses no model, so these tests need not
    wait minutes for the encoder to be prepared."""
    return tmp_path_factory.mktemp("no-models")


@pytest.fixture
def airflow() -> Iterator[tuple[str, AirflowStandIn]]:
    state = AirflowStandIn()
    clear_caches()
    try:
        with LocalServer(AirflowApi, state=state) as server:
            yield server.url, state
    finally:
        clear_caches()


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


@pytest.fixture
def secrets_manager(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 Secrets Manager client of the real moto server, the function's AWS environment pointed at it."""
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return boto3.client("secretsmanager")


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lambda_trigger")
