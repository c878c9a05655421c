"""What an Airflow answer means: another try, success, or an error to report (and how it reads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    request: str = "Airflow"  # what was asked ("POST https://…/dagRuns"), for an error that says where


class Retryable(Exception):
    """A failure worth another try: a connection error, a timeout, 429 or 5xx."""


class TriggerError(RuntimeError):
    """A failure that another try will not fix; the message says what to do."""


class AuthError(TriggerError):
    """The login failed in a way another try will not fix (the credentials rejected, or an answer that holds
    no token): every object of the invocation would fail the same way."""


class Backend(Protocol):
    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout_s: float) -> Answer: ...


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def json_object(body: str) -> dict[str, Any] | None:
    """The answer's JSON object, or None: Airflow always answers one, so anything else (an HTML page from a
    wrong base URL or a proxy, plain text, an empty body) did not come from Airflow."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def short(body: str, limit: int = 300) -> str:
    """Airflow's answer for a message: its `detail` when it has one, cut to a readable length."""
    detail = (json_object(body) or {}).get("detail", body)
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text[:limit] or "an empty body"


def not_from_airflow(answer: Answer, expected: str) -> str:
    """Why a success status without the body Airflow sends is an error, and what to check."""
    return (
        f"{answer.request} answered HTTP {answer.status} without {expected} ({short(answer.body)}): "
        "does AIRFLOW_BASE_URL (or MWAA_ENV_NAME) name the Airflow API server, not a proxy or another site?"
    )
