"""The backend a configuration names: Amazon MWAA, or the Airflow REST API with its credentials."""

from __future__ import annotations

from airflow_rest import RestBackend
from answers import Backend
from auth import forget_secret, read_secret
from config import Config
from mwaa import MwaaBackend


def make_backend(config: Config) -> Backend:
    if config.mwaa_env:
        return MwaaBackend(config.mwaa_env)
    assert config.base_url is not None  # Config.check
    if config.secret_arn:
        arn = config.secret_arn

        def forget() -> None:
            forget_secret(arn)

        return RestBackend(config.base_url, lambda: read_secret(arn), forget)
    username, password = config.username or "", config.password or ""
    return RestBackend(config.base_url, lambda: (username, password))
