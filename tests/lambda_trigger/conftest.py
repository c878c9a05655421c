"""The lambda_trigger tests' fixtures: the Airflow stand-in on a local port, the function's environment
pointed at it, and the handler's log lines captured. The modules of lambda_trigger/ are imported by their
plain names, as at the zip's root (tests/conftest.py puts the folder on sys.path)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lambda_trigger")
