"""The Amazon MWAA backend, for a function whose Airflow is an MWAA environment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from answers import Answer, Retryable
from config import mwaa_trigger_path


@dataclass
class MwaaBackend:
    """Amazon MWAA: the same REST call through boto3 mwaa.invoke_rest_api (IAM auth, no password)."""

    env_name: str
    client: Any = None

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout_s: float) -> Answer:
        from botocore.exceptions import BotoCoreError, ClientError  # boto3 is in the Lambda runtime

        path = mwaa_trigger_path(dag_id)
        request = f"MWAA {self.env_name} POST {path}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        try:
            response = self._client(timeout_s).invoke_rest_api(Name=self.env_name, Path=path, Method="POST", Body=body)
        except ClientError as exc:
            return _answer(exc.response, request)
        except BotoCoreError as exc:  # endpoint unreachable, read timeout
            raise Retryable(f"MWAA {self.env_name}: {type(exc).__name__}: {exc}") from exc
        return _answer(response, request)

    def _client(self, timeout_s: float) -> Any:
        if self.client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            # Our own loop retries with the invocation's deadline in mind; botocore's would not.
            boto_config = BotoConfig(retries={"max_attempts": 1}, connect_timeout=timeout_s, read_timeout=timeout_s)
            self.client = boto3.client("mwaa", config=boto_config)
        return self.client


def _answer(response: dict[str, Any], request: str) -> Answer:
    """Airflow's answer as MWAA wraps it (RestApiStatusCode, RestApiResponse), or MWAA's own: no such
    environment, access denied, throttled, or a page that is no MWAA answer. MWAA's own is kept as text, not
    JSON, so that a 200 or 409 without Airflow's answer never counts as triggered or a duplicate."""
    status = response.get("RestApiStatusCode")
    if isinstance(status, int) and not isinstance(status, bool):
        # Whatever Airflow's body is (an object, or an array or text from something else), it stays text
        # here; answers.json_object decides whether it is Airflow's.
        return Answer(status, json.dumps(response.get("RestApiResponse"), default=str), request)
    error = _mapping(response.get("Error"))
    reason = f"{error.get('Code', 'no RestApiStatusCode')}: {error.get('Message') or 'not an answer of Airflow'}"
    http_status = _mapping(response.get("ResponseMetadata")).get("HTTPStatusCode")
    if not isinstance(http_status, int) or isinstance(http_status, bool) or not 100 <= http_status <= 599:
        http_status = 500
    return Answer(http_status, reason, request)


def _mapping(value: Any) -> dict[str, Any]:
    """A part of MWAA's answer that should be an object; anything else reads as empty."""
    return value if isinstance(value, dict) else {}
