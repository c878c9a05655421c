"""The Airflow 3 REST API backend: POST /auth/token for a JWT, then POST /api/v2/dags/{dag_id}/dagRuns."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from answers import Answer, AuthError, Retryable, is_retryable, json_object, not_from_airflow, short
from auth import cached_token, forget_tokens, keep_token


def _http(method: str, url: str, body: dict[str, Any] | None, headers: dict[str, str], timeout_s: float) -> Answer:
    """One HTTP request; a connection error, a timeout or a garbled answer becomes Retryable, every answer an
    Answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Answer(response.status, response.read().decode(errors="replace"), f"{method} {url}")
    except urllib.error.HTTPError as exc:
        error = exc  # an error status: its body is read below, where a read cut short is caught too
    # HTTPException: not an HTTP answer at all, or one cut short (BadStatusLine, IncompleteRead).
    except _GARBLED as exc:
        raise _retryable(method, url, exc) from exc
    try:
        return Answer(error.code, error.read().decode(errors="replace"), f"{method} {url}")
    except _GARBLED as exc:
        raise _retryable(method, url, exc) from exc
    finally:
        error.close()


_GARBLED = (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException)


def _retryable(method: str, url: str, exc: BaseException) -> Retryable:
    reason = getattr(exc, "reason", exc)
    return Retryable(f"{method} {url}: {type(reason).__name__}: {reason}")


@dataclass
class RestBackend:
    """Airflow 3 REST API: POST /auth/token for a JWT, then POST /api/v2/dags/{dag_id}/dagRuns."""

    base_url: str
    credentials: Callable[[], tuple[str, str]]
    forget_credentials: Callable[[], None] = field(default=lambda: None)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout_s: float) -> Answer:
        url = f"{self.base_url}/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        answer = _http("POST", url, body, {"Authorization": f"Bearer {self._token(timeout_s)}"}, timeout_s)
        if answer.status == 401:  # the cached token was revoked or the signing key rotated: one fresh token
            forget_tokens(self.base_url)
            answer = _http("POST", url, body, {"Authorization": f"Bearer {self._token(timeout_s)}"}, timeout_s)
        return answer

    def _token(self, timeout_s: float) -> str:
        username, password = self.credentials()
        # Keyed by the credentials too: a changed password never reuses a token of the old one.
        key = (self.base_url, username, hashlib.sha256(password.encode()).hexdigest()[:16])
        token = cached_token(key)
        if token is None:
            token = self._login(timeout_s)
            keep_token(key, token)
        return token

    def _login(self, timeout_s: float) -> str:
        username, password = self.credentials()
        url = f"{self.base_url}/auth/token"
        answer = _http("POST", url, {"username": username, "password": password}, {}, timeout_s)
        if answer.status in (401, 403):
            self.forget_credentials()  # a rotated secret is read afresh by the next invocation
            raise AuthError(
                f"Airflow at {self.base_url} rejected the credentials of user {username!r} "
                f"(HTTP {answer.status}: {short(answer.body)}); check AIRFLOW_SECRET_ARN or AIRFLOW_PASSWORD"
            )
        if is_retryable(answer.status):
            raise Retryable(f"POST {url}: HTTP {answer.status}: {short(answer.body)}")
        if answer.status not in (200, 201):
            raise AuthError(f"POST {url}: HTTP {answer.status}: {short(answer.body)}; check AIRFLOW_BASE_URL")
        token = (json_object(answer.body) or {}).get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(not_from_airflow(answer, "an access_token"))
        return token
