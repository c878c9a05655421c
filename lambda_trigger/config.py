"""The function's configuration, from its environment variables (see README.md beside this file)."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

# Kept in step with patientinsight.ingest.formats by tests/lambda_trigger/test_config.py: this folder
# is zipped alone and imports nothing of the project.
DEFAULT_SUFFIXES = ".csv,.json,.jsonl,.ndjson,.gz"
MWAA_PATH_LIMIT = 64  # invoke_rest_api rejects longer paths


@dataclass(frozen=True)
class Config:
    dag_id: str = "patient_ingest"
    prefix: str = ""
    suffixes: tuple[str, ...] = tuple(DEFAULT_SUFFIXES.split(","))
    base_url: str | None = None
    username: str | None = None
    password: str | None = None
    secret_arn: str | None = None
    mwaa_env: str | None = None
    request_timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    deadline_margin_s: float = 2.0  # keep this much of the invocation for logging and the answer
    max_wait_s: float = 60.0  # retry budget when no Lambda context tells the remaining time

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        suffixes = env.get("S3_SUFFIXES", DEFAULT_SUFFIXES)
        config = cls(
            dag_id=env.get("DAG_ID", "patient_ingest"),
            prefix=env.get("S3_PREFIX", ""),
            suffixes=tuple(s.strip().lower() for s in suffixes.split(",") if s.strip()),
            base_url=(env.get("AIRFLOW_BASE_URL") or "").rstrip("/") or None,
            username=env.get("AIRFLOW_USERNAME") or None,
            password=env.get("AIRFLOW_PASSWORD") or None,
            secret_arn=env.get("AIRFLOW_SECRET_ARN") or None,
            mwaa_env=env.get("MWAA_ENV_NAME") or None,
            request_timeout_s=float(env.get("REQUEST_TIMEOUT_S", "10")),
            max_attempts=int(env.get("MAX_ATTEMPTS", "8")),
            backoff_base_s=float(env.get("BACKOFF_BASE_S", "0.5")),
            backoff_max_s=float(env.get("BACKOFF_MAX_S", "20")),
            max_wait_s=float(env.get("MAX_WAIT_S", "60")),
        )
        config.check()
        return config

    def check(self) -> None:
        """Fail at start-up with the variable to set, not at the first upload."""
        if self.mwaa_env:
            path = mwaa_trigger_path(self.dag_id)
            if len(path) > MWAA_PATH_LIMIT:
                raise ConfigError(f"MWAA path {path!r} is longer than {MWAA_PATH_LIMIT} characters: shorten DAG_ID")
            return
        if not self.base_url:
            raise ConfigError("set AIRFLOW_BASE_URL (Airflow REST API) or MWAA_ENV_NAME (Amazon MWAA)")
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Without a scheme every request would fail with an error about an unknown URL type, per object.
            raise ConfigError(
                f"AIRFLOW_BASE_URL {self.base_url!r} is not an http(s) URL: write it whole, e.g. "
                "https://airflow.example.org"
            )
        if not self.secret_arn and not (self.username and self.password):
            raise ConfigError("set AIRFLOW_SECRET_ARN, or AIRFLOW_USERNAME and AIRFLOW_PASSWORD for development")


class ConfigError(ValueError):
    """The function's environment variables are wrong: nothing can be triggered."""


def mwaa_trigger_path(dag_id: str) -> str:
    """The MWAA REST path that triggers `dag_id`: here, because its length is checked at start-up."""
    return f"/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"
