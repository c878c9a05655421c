"""A local stand-in for the Airflow 3 REST API (POST /auth/token, POST /api/v2/dags/{dag_id}/dagRuns)
and the MWAA invoke_rest_api protocol, that records every request: the handler talks real HTTP to it."""

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


@dataclass
class AirflowStandIn:
    """State of the stand-in: what it was sent, and how it should answer."""

    dags: set[str] = field(default_factory=lambda: {"patient_ingest"})
    token_ttl_s: float = 3600
    script: list[int] = field(default_factory=list)  # statuses to answer dagRuns with first (503, 429...)
    refuse: set[str] = field(default_factory=set)  # object keys answered with 400
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)

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
        if self.path == "/auth/token":
            self._auth(body)
        elif match := re.fullmatch(r"/api/v2/dags/([^/]+)/dagRuns", self.path):
            self.send_json(*self._trigger(match.group(1), body, self.headers.get("Authorization", "")))
        elif match := re.fullmatch(r"/restapi/([^/]+)", self.path):
            self._mwaa(body)
        else:
            self.send_json(404, {"detail": "Not Found"})

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
