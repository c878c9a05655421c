"""backends.py: the configuration picks MWAA or the REST API, and the REST API's credentials come from
the secret when one is named, else from the variables."""

from __future__ import annotations

import json
import uuid
from typing import Any

from airflow_rest import RestBackend
from backends import make_backend
from config import Config
from mwaa import MwaaBackend


def test_mwaa_when_an_environment_is_named() -> None:
    backend = make_backend(Config(mwaa_env="prod-env", base_url="http://ignored"))
    assert isinstance(backend, MwaaBackend) and backend.env_name == "prod-env"


def test_rest_with_the_variables_credentials() -> None:
    backend = make_backend(Config(base_url="http://airflow:8080", username="admin", password="s3cret"))
    assert isinstance(backend, RestBackend) and backend.base_url == "http://airflow:8080"
    assert backend.credentials() == ("admin", "s3cret")


def test_rest_with_the_secrets_credentials(secrets_manager: Any) -> None:
    """The secret (a real moto Secrets Manager) is read when the backend first needs it, not when it is
    made, and read again after the backend forgets it (a rotated password)."""
    from auth import clear_caches

    name = f"patientinsight/backends-test-{uuid.uuid4().hex}"
    clear_caches()
    try:
        backend = make_backend(Config(base_url="http://airflow:8080", secret_arn=name))  # a name serves as an id
        assert isinstance(backend, RestBackend)  # made before the secret exists: nothing was read yet
        secrets_manager.create_secret(Name=name, SecretString=json.dumps({"username": "svc", "password": "one"}))
        assert backend.credentials() == ("svc", "one")
        secrets_manager.put_secret_value(SecretId=name, SecretString=json.dumps({"username": "svc", "password": "two"}))
        assert backend.credentials() == ("svc", "one")  # cached: one read per warm Lambda
        backend.forget_credentials()
        assert backend.credentials() == ("svc", "two")
    finally:
        clear_caches()
