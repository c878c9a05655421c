"""A local stand-in for the Airflow 3 REST API (POST /auth/token, POST /api/v2/dags/{dag_id}/dagRuns)
and the MWAA invoke_rest_api protocol, that records every request: the handler talks real HTTP to it.
It can also answer as something that is not Airflow, or not well (`Fault`)."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tests.http_server import JsonHandler

PASSWORD = "correct horse"
AIRFLOW_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]+$")  # Airflow's default allowed_run_id_pattern


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Fault:
    """An answer given instead of Airflow's: a status with a body as it is (an HTML page, plain text, JSON
    without what Airflow sends), or with `raw`, bytes that are no HTTP answer at all (b"": a hang-up)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    raw: bytes | None = None

    @classmethod
    def json(cls, status: int, payload: Any) -> Fault:
        return cls(status, json.dumps(payload).encode())


# What can come back from a login or a trigger call instead of Airflow's answer, by name.
FAULTS: dict[str, Fault] = {
    "401": Fault.json(401, {"detail": "Not authenticated"}),
    "403": Fault.json(403, {"detail": "Forbidden"}),
    "404": Fault.json(404, {"detail": "Not Found"}),
    "409": Fault.json(409, {"detail": "already exists"}),
    "500": Fault(500, b"Internal Server Error", "text/plain"),
    "503": Fault(503, b"<html><body>503 Service Temporarily Unavailable</body></html>", "text/html"),
    "200 HTML": Fault(
        200, b"<!doctype html><html><title>Sign in</title><body>Please sign in</body></html>", "text/html"
    ),
    "200 not JSON": Fault(200, b"OK", "text/plain"),
    "200 JSON array": Fault.json(200, ["access_token", "dag_run_id"]),
    "201 without token": Fault.json(201, {"token_type": "bearer"}),
    "409 HTML": Fault(409, b"<html><body>409 Conflict</body></html>", "text/html"),
    # MWAA's wrapper with a body that is no Airflow answer inside (a list, where Airflow sends an object).
    "MWAA 200 JSON array": Fault.json(200, {"RestApiStatusCode": 200, "RestApiResponse": ["dag_run_id"]}),
    "not HTTP": Fault(raw=b"SSH-2.0-OpenSSH_9.6\r\n"),
    # An error answer whose body is cut short (a proxy or a server that died mid-answer).
    "503 cut short": Fault(raw=b'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n{"detail"'),
    "hang-up": Fault(raw=b""),
}


@dataclass
class AirflowStandIn:
    """State of the stand-in: what it was sent, and how it should answer."""

    dags: set[str] = field(default_factory=lambda: {"patient_ingest"})
    token_ttl_s: float = 3600
    script: list[int] = field(default_factory=list)  # statuses to answer dagRuns with first (503, 429...)
    refuse: set[str] = field(default_factory=set)  # object keys answered with 400
    login_faults: list[Fault] = field(default_factory=list)  # answers to /auth/token before its own
    trigger_faults: list[Fault] = field(default_factory=list)  # answers to dagRuns (REST or MWAA) before its own
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)

    def reset(self) -> None:
        """As new, for the next example of a property test: the server keeps this very object."""
        self.__dict__.update(AirflowStandIn().__dict__)

    def calls(self, path_part: str) -> list[Seen]:
        return [r for r in self.requests if path_part in r.path]

    def issue_token(self) -> str:
        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        claims = {"sub": "admin", "exp": time.time() + self.token_ttl_s}
        token = f"{part({'alg': 'HS512'})}.{part(claims)}.sig{len(self.tokens)}"
        self.tokens.add(token)
        return token


class AirflowApi(JsonHandler):
    state: AirflowStandIn

    def do_POST(self) -> None:  # noqa: N802 (http.server calls it so)
        body = self.read_json()
        self.state.requests.append(Seen("POST", self.path, dict(self.headers), body))
        if self.path == "/auth/token" and self.state.login_faults:
            self._fault(self.state.login_faults.pop(0))
        elif self.path == "/auth/token":
            self._auth(body)
        elif (self.path.endswith("/dagRuns") or self.path.startswith("/restapi/")) and self.state.trigger_faults:
            self._fault(self.state.trigger_faults.pop(0))
        elif match := re.fullmatch(r"/api/v2/dags/([^/]+)/dagRuns", self.path):
            self.send_json(*self._trigger(match.group(1), body, self.headers.get("Authorization", "")))
        elif match := re.fullmatch(r"/restapi/([^/]+)", self.path):
            self._mwaa(body)
        else:
            self.send_json(404, {"detail": "Not Found"})

    def _fault(self, fault: Fault) -> None:
        if fault.raw is not None:
            self.wfile.write(fault.raw)
            self.close_connection = True
            return
        self.send_response(fault.status)
        self.send_header("Content-Type", fault.content_type)
        self.send_header("Content-Length", str(len(fault.body)))
        self.end_headers()
        self.wfile.write(fault.body)

    def _auth(self, body: dict[str, Any]) -> None:
        if body == {"username": "admin", "password": PASSWORD}:
            self.send_json(201, {"access_token": self.state.issue_token()})
        else:
            self.send_json(401, {"detail": "Invalid credentials"})

    def _trigger(self, dag_id: str, body: dict[str, Any], authorization: str) -> tuple[int, dict[str, Any]]:
        if authorization.removeprefix("Bearer ") not in self.state.tokens:
            return 401, {"detail": "Not authenticated"}
        if self.state.script:
            status = self.state.script.pop(0)
            return status, {"detail": f"scripted {status}"}
        if dag_id not in self.state.dags:
            return 404, {"detail": f"The Dag with dag_id: `{dag_id}` was not found"}
        if body["conf"]["key"] in self.state.refuse:
            return 400, {"detail": "refused"}
        if "logical_date" not in body:
            return 422, {"detail": [{"type": "missing", "loc": ["body", "logical_date"]}]}
        run_id = body["dag_run_id"]
        if run_id in self.state.runs:
            return 409, {"detail": f"DAG Run with run_id: `{run_id}` already exists"}
        self.state.runs[run_id] = {"dag_run_id": run_id, "conf": body["conf"], "state": "queued"}
        return 200, self.state.runs[run_id]

    def _mwaa(self, body: dict[str, Any]) -> None:
        """MWAA wraps Airflow's answer: 200 with RestApiStatusCode, or 400 RestApiClientException."""
        dag_id = body["Path"].split("/")[2]
        status, answer = self._trigger(dag_id, body["Body"], f"Bearer {self.state.issue_token()}")
        payload = {"RestApiStatusCode": status, "RestApiResponse": answer}
        if status < 300:
            self.send_json(200, payload)
        else:
            error_type = "RestApiServerException" if status >= 500 else "RestApiClientException"
            self.send_json(400 if status < 500 else 500, payload, {"x-amzn-ErrorType": error_type})
