"""Hostile and careless clients, against a real uvicorn process (`patientinsight serve`): the key check comes
before the body, bodies are UTF-8 JSON, numbers are numbers, overlong request heads and slow clients get JSON
problems, nobody holds a connection open for longer than the configured timeouts, a client that leaves is no
error, and no client can grow /metrics. Many idle clients: test_connection_limits.py."""

from __future__ import annotations

import json
import random
import re
import socket
import string
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import API_KEY, served_with_limits
from tests.serving.raw_http import parse, read_until_closed
from tests.serving.service import Service

QUERY = "A woman with fever and a productive cough."
CLIENT_TIMEOUT_S = 1.0  # the service's serve_client_timeout_s here: short, so the slow-client tests are fast
MAX_CONCURRENCY = 8
# uvloop's timers count in whole milliseconds from the loop's cached clock: one may fire a little early.
TIMER_SLACK_S = 0.05


@pytest.fixture(scope="module")
def service(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with served_with_limits(
        built_home, tmp_path_factory.mktemp("hostile"), CLIENT_TIMEOUT_S, MAX_CONCURRENCY
    ).running() as running:
        yield running


def exchange(service: Service, data: bytes, wait_s: float = 10.0) -> tuple[bytes, float]:
    """Sends raw bytes on a new connection and reads until the server closes it: (what came back, seconds)."""
    started = time.monotonic()
    with socket.create_connection((service.host, service.port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = read_until_closed(sock)
    return received, time.monotonic() - started


def post(service: Service, body: bytes, content_type: str | None = "application/json", key: str | None = API_KEY):
    headers = ({"Content-Type": content_type} if content_type else {}) | ({"X-API-Key": key} if key else {})
    return httpx.post(service.url + "/v1/query", content=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json.dumps({"text": QUERY}).encode("utf-16"),
        b'{"text": "' + b"x" * 100_000 + b'"}',  # above the body limit: still a 401, not a 413
        json.dumps({"text": QUERY, "k": "5"}).encode(),
    ],
    ids=["malformed", "utf-16", "too-large", "invalid"],
)
def test_no_key_is_401_whatever_the_body(service: Service, body: bytes) -> None:
    response = post(service, body, key=None)
    assert response.status_code == 401
    assert response.json() == {"detail": "a valid API key is required (header X-API-Key)"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps({"text": QUERY}).encode("utf-16"), "application/json"),  # with a byte-order mark
        (json.dumps({"text": QUERY}).encode("utf-16-le"), "application/json"),  # without one
        (json.dumps({"text": QUERY}).encode("utf-32"), "application/json"),
        ('{"text": "fièvre"}'.encode("latin-1"), "application/json"),
        (json.dumps({"text": QUERY}).encode(), "application/json; charset=utf-16"),
    ],
    ids=["utf-16", "utf-16-le", "utf-32", "latin-1", "charset-utf-16"],
)
def test_a_body_that_is_not_utf8_is_400(service: Service, body: bytes, content_type: str) -> None:
    response = post(service, body, content_type)
    assert response.status_code == 400
    assert response.json() == {"detail": "the body must be JSON text in UTF-8"}


def test_a_body_that_is_not_json_is_415_and_utf8_json_is_fine(service: Service) -> None:
    refused = post(service, json.dumps({"text": QUERY}).encode(), "text/plain")
    utf8 = '{"text": "fièvre et toux", "generate": false}'.encode()
    accepted = post(service, utf8, "application/json; charset=UTF-8")
    assert refused.status_code == 415 and "application/json" in refused.json()["detail"]
    assert accepted.status_code == 200, accepted.text


def test_a_body_without_a_content_type_is_415(service: Service) -> None:
    """FastAPI would parse it as JSON anyway (and answer 422 for a body that is not an object)."""
    for body in (json.dumps({"text": QUERY}).encode(), b"[1, 2]"):
        response = post(service, body, content_type=None)
        assert response.status_code == 415
        assert response.json() == {"detail": "the body must be JSON (Content-Type: application/json)"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"k": "5"}, "k"),
        ({"k": True}, "k"),
        ({"k": 2.5}, "k"),
        ({"generate": 1}, "generate"),
        ({"generate": "false"}, "generate"),
        ({"filters": {"age_min": "30"}}, "filters.age_min"),
        ({"filters": {"age_max": True}}, "filters.age_max"),
    ],
)
def test_numbers_and_booleans_are_not_coerced(service: Service, extra: dict, field: str) -> None:  # type: ignore[type-arg]
    response = post(service, json.dumps({"text": QUERY, **extra}).encode())
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["detail"]] == [field]


def test_an_overlong_uid_gets_a_json_problem(service: Service) -> None:
    headers = {"X-API-Key": API_KEY}
    long = httpx.get(f"{service.url}/v1/cases/{'u' * 1000}", headers=headers)  # the app's bound: 128
    raw, _ = exchange(service, f"GET /v1/cases/{'u' * 200_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert long.status_code == 422 and long.json()["detail"][0]["field"] == "path.patient_uid"
    status, response_headers, body = parse(raw)  # h11's bound on a request head (16 KiB), as JSON
    assert status == 431 and response_headers["content-type"] == "application/json"
    assert body == {"detail": "the request line and headers are longer than 16384 bytes"}


def test_a_body_that_never_arrives_is_408_within_the_timeout(service: Service) -> None:
    head = f"POST /v1/query HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
    raw, elapsed = exchange(service, (head + "Content-Length: 100\r\n\r\n").encode() + b'{"text": "')
    status, headers, body = parse(raw)
    assert status == 408 and headers["connection"] == "close"
    assert body == {"detail": f"the request body did not arrive within {CLIENT_TIMEOUT_S:g} s"}
    assert CLIENT_TIMEOUT_S - TIMER_SLACK_S <= elapsed < CLIENT_TIMEOUT_S + 5  # answered, and the connection closed


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half a head"])
def test_a_head_that_never_ends_is_408_within_the_timeout(service: Service, sent: bytes) -> None:
    raw, elapsed = exchange(service, sent)
    status, headers, body = parse(raw)
    assert status == 408 and headers["connection"] == "close"
    assert body == {"detail": f"the request line and headers did not arrive within {CLIENT_TIMEOUT_S:g} s"}
    assert CLIENT_TIMEOUT_S - TIMER_SLACK_S <= elapsed < CLIENT_TIMEOUT_S + 5


def test_an_answer_before_the_body_closes_the_connection(service: Service) -> None:
    """A 401 needs no body: the server answers at once and closes, rather than wait for the other 90 bytes."""
    head = b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    raw, elapsed = exchange(service, head + b'{"text": "')
    status, headers, _ = parse(raw)
    assert status == 401 and headers["connection"] == "close"
    assert elapsed < CLIENT_TIMEOUT_S


# What the issue measured: each shape got a 200 on /healthz, only a 200 KB head got its 431.
OVERLONG_HEADS = {
    "one 20 KB header": [("X-Big", "a" * 20_000)],
    "300 headers of 100 B": [(f"X-Header-{i:03}", "v" * 86) for i in range(300)],
    "one 17 KB header": [("X-Big", "a" * 17_000)],
    "one 65 KB header": [("X-Big", "a" * 65_000)],
}


def raw_request(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("shape", OVERLONG_HEADS)
def test_a_head_over_16_kib_is_431_on_every_route(service: Service, shape: str) -> None:
    for method, path in [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/"), ("POST", "/v1/query")]:
        raw, _ = exchange(service, raw_request(method, path, OVERLONG_HEADS[shape]))
        status, headers, body = parse(raw)
        assert status == 431 and headers["content-type"] == "application/json", (method, path)
        assert body == {"detail": "the request line and headers are longer than 16384 bytes"}


def test_a_head_under_16_kib_is_served(service: Service) -> None:
    request = raw_request("GET", "/healthz", [("Connection", "close"), ("X-Big", "a" * 16_000)])
    assert len(request) < 16_384
    raw, _ = exchange(service, request)
    assert parse(raw)[0] == 200


def test_a_client_that_leaves_mid_body_is_logged_quietly(service: Service) -> None:
    """It declares 100 bytes, sends 10 and closes: one INFO line, no ERROR and no traceback."""
    seen = len(service.log())
    head = f"POST /v1/query HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((service.host, service.port)) as sock:
        sock.sendall((head + "Content-Length: 100\r\n\r\n").encode() + b'{"text": "')
        time.sleep(0.2)  # the server is waiting for the rest of the body
    line = "POST /v1/query: the client closed the connection before its body arrived"
    for _ in range(100):
        if line in service.log()[seen:]:
            break
        time.sleep(0.1)
    log = service.log()[seen:]
    assert f"INFO serving.gate: {line}" in log
    assert "Traceback" not in log and "ERROR" not in log and "ClientDisconnect" not in log


STANDARD_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
STATUS_CLASSES = {"1xx", "2xx", "3xx", "4xx", "5xx"}
ROUTES = {"/", "/healthz", "/readyz", "/metrics", "/v1/query", "/v1/followup", "/v1/cases/{patient_uid}"}
ROUTES |= {"/static", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
SERIES = re.compile(r"^patientinsight_http_request_duration_seconds_count\{(.*)\} ", re.MULTILINE)


def request_series(service: Service) -> set[tuple[str, str, str]]:
    """(route, method, status) of every latency series on /metrics."""
    series = set()
    for labels in SERIES.findall(httpx.get(service.url + "/metrics").text):
        parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        series.add((parsed["route"], parsed["method"], parsed["status"]))
    return series


def test_random_methods_and_paths_do_not_grow_the_metrics(service: Service) -> None:
    """Unauthenticated requests with made-up methods and paths: every label value comes from a closed set
    (an unknown one is "other"), so /metrics stays the same size however many come."""
    rng = random.Random(27)

    def word(low: int, high: int) -> str:
        return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(low, high)))

    before = request_series(service)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for _ in range(300):
            path = rng.choice(["/" + word(3, 12).lower(), f"/v1/cases/{word(5, 20)}", "/healthz", "/static/x.js"])
            client.request(word(4, 10), path)
    after = request_series(service)
    routes, methods, statuses = ({labels[i] for labels in after} for i in range(3))
    assert routes <= ROUTES | {"other"}
    assert methods <= STANDARD_METHODS | {"other"}
    assert statuses <= STATUS_CLASSES | {"other"}
    # Four routes were asked for, with unknown methods only: at most one new series per route and class.
    assert len(after - before) <= 4 * len(STATUS_CLASSES)
