"""What an Airflow answer means: another try, success, or an error to report (and how it reads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


class Retryable(Exception):
    """A failure worth another try: a connection error, a timeout, 429 or 5xx."""


class TriggerError(RuntimeError):
    """A failure that another try will not fix; the message says what to do."""


class AuthError(TriggerError):
    """Airflow rejected the credentials: every object of the invocation would fail the same way."""


class Backend(Protocol):
    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout_s: float) -> Answer: ...


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def short(body: str, limit: int = 300) -> str:
    """Airflow's answer for a message: its `detail` when it has one, cut to a readable length."""
    try:
        detail = json.loads(body).get("detail", body)
    except (json.JSONDecodeError, AttributeError):
        detail = body
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return text[:limit]
