"""Many clients against a real uvicorn process (`patientinsight serve`): the concurrency limit counts requests
in flight, not open connections, so idle sockets cannot take the slots of real requests; each client address
may hold at most that many connections; and an idle socket is closed by the head timeout, counted from its
opening. The idle clients come from other loopback addresses (127.0.0.2, ...) than the real requests."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import API_KEY, served_with_limits
from tests.serving.raw_http import parse, read_until_closed
from tests.serving.service import Service

LIMIT = 4  # the service's serve_limit_concurrency here, as in the issue
CLIENT_TIMEOUT_S = 3.0  # its serve_client_timeout_s: the head (and body) timeout
AT_LIMIT = {"detail": "the service is at its concurrency limit; retry shortly"}
TOO_MANY_CONNECTIONS = {"detail": "too many open connections from this address; retry shortly"}


@pytest.fixture(scope="module")
def service(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with served_with_limits(
        built_home, tmp_path_factory.mktemp("connections"), CLIENT_TIMEOUT_S, LIMIT
    ).running() as running:
        yield running


def connect(service: Service, source: str) -> socket.socket:
    return socket.create_connection(
        (service.host, service.port), timeout=CLIENT_TIMEOUT_S + 10, source_address=(source, 0)
    )


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], object]:
    """Reads until the server closes: status, headers (lower-case names) and JSON body."""
    return parse(read_until_closed(sock))


def fill(service: Service, source: str, stack: ExitStack) -> list[socket.socket]:
    """LIMIT idle sockets from `source`, which say nothing. One more from there is refused at once: so the
    server has taken (and counts) all of them."""
    idle = [stack.enter_context(connect(service, source)) for _ in range(LIMIT)]
    with connect(service, source) as extra:
        status, headers, body = read_response(extra)
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
    assert body == TOO_MANY_CONNECTIONS
    return idle


def query(service: Service) -> httpx.Response:
    body = {"text": "A woman with fever and a productive cough.", "generate": False}
    return httpx.post(service.url + "/v1/query", json=body, headers={"X-API-Key": API_KEY}, timeout=30)


def test_idle_sockets_beyond_the_limit_leave_requests_served(service: Service) -> None:
    """Twice the limit of idle sockets (the issue: every real request got a 503 until they closed)."""
    with ExitStack() as stack:
        fill(service, "127.0.0.2", stack)
        fill(service, "127.0.0.3", stack)
        health = [httpx.get(service.url + "/healthz").status_code for _ in range(2 * LIMIT)]
        answered = query(service)
    assert health == [200] * (2 * LIMIT)
    assert answered.status_code == 200, answered.text


def test_idle_sockets_are_closed_by_the_head_timeout(service: Service) -> None:
    """Each gets its 408 within the head timeout of its opening, and the server lets go of it then, though the
    client keeps its end open: the address may connect again at once (not one timeout later)."""
    with ExitStack() as stack:
        opened = time.monotonic()
        idle = fill(service, "127.0.0.4", stack)
        for sock in idle:
            status, headers, body = read_response(sock)
            assert status == 408 and headers["connection"] == "close"
            assert body == {"detail": f"the request line and headers did not arrive within {CLIENT_TIMEOUT_S:g} s"}
        assert time.monotonic() - opened < CLIENT_TIMEOUT_S + 5
        deadline = time.monotonic() + CLIENT_TIMEOUT_S / 2
        while True:  # the idle sockets are still open on this side
            with connect(service, "127.0.0.4") as again:
                again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status, _, _ = read_response(again)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert status == 200


def test_beyond_the_limit_of_requests_in_flight_is_a_json_503(service: Service) -> None:
    """LIMIT requests whose bodies never come are in flight until their body's deadline: one more request
    gets a 503 at once; once they have had their 408, requests are answered again."""
    head = f"POST /v1/query HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
    with ExitStack() as stack:
        slow = [stack.enter_context(connect(service, "127.0.0.5")) for _ in range(LIMIT)]
        for sock in slow:
            sock.sendall((head + "Content-Length: 100\r\n\r\n").encode() + b'{"text": "')
        deadline = time.monotonic() + CLIENT_TIMEOUT_S / 2
        refused = httpx.get(service.url + "/healthz")
        while refused.status_code == 200 and time.monotonic() < deadline:  # until the server has read them all
            time.sleep(0.05)
            refused = httpx.get(service.url + "/healthz")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json() == AT_LIMIT
        assert [read_response(sock)[0] for sock in slow] == [408] * LIMIT
    for _ in range(50):  # once the server has seen them end, it answers again
        if httpx.get(service.url + "/healthz").status_code == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail("still at the concurrency limit after the requests in flight ended")
