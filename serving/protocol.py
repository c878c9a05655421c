"""uvicorn's h11 protocol, with what it lacks against hostile clients. `patientinsight serve` and the image
(`uvicorn ... --http serving.protocol:JsonH11Protocol`) run it, and its bounds come from the settings, so
they hold however the service is started:

- a request's head (request line and headers) must arrive within `serve_client_timeout_s` of the
  connection's opening (or of its first bytes on a kept-alive connection): uvicorn bounds only the idle
  time between requests, so a client trickling its headers, or saying nothing, would hold a connection for
  ever (the body's deadline is the app's, `serving.limits.BodyDeadline`);
- an idle kept-alive connection is closed after `serve_timeout_keep_alive_s` (uvicorn's timeout_keep_alive);
- beyond `serve_limit_concurrency` requests in flight, a 503 at once, with Retry-After. Only requests count:
  uvicorn's own limit counts open connections too, so idle sockets would take every slot. Connections are
  bounded apart, per client address: beyond `serve_limit_concurrency` open from one address, a new one gets
  the same 503 and is closed;
- a request line and headers longer than h11's bound (16 KiB) are a 431, however they arrive (h11 itself
  refuses only a head still incomplete past its bound, so one that comes in a single read got through);
- uvicorn's own refusals are JSON problems like the app's: a malformed request gets `{"detail": ...}`
  (400, 431), not plain text;
- the app is told the address the server listens on (`serving.auth.BIND_HOST`): dev mode needs loopback.

h11, not httptools where that is installed: a laptop and the image behave the same.
"""

from __future__ import annotations

import asyncio
import json
import sys
import weakref
from collections import Counter
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import ServerState

from patientinsight.settings import get_settings
from serving.auth import BIND_HOST

AT_LIMIT = "the service is at its concurrency limit; retry shortly"
TOO_MANY_CONNECTIONS = "too many open connections from this address; retry shortly"

# Open connections per client address, for each server (one per uvicorn process).
_open_per_client: weakref.WeakKeyDictionary[ServerState, Counter[str]] = weakref.WeakKeyDictionary()


def _problem(detail: str, retry_after_s: int | None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    return body, headers


def problem_bytes(status: int, detail: str, retry_after_s: int | None = None) -> bytes:
    """A whole HTTP/1.1 response with a JSON problem body, closing the connection (written on the socket
    where no request is there to answer through ASGI)."""
    body, headers = _problem(detail, retry_after_s)
    lines = [f"HTTP/1.1 {status} {STATUS_PHRASES[status].decode()}".encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send_problem(send: Send, status: int, detail: str, retry_after_s: int | None = None) -> None:
    """The same response, through ASGI (uvicorn closes the connection after it)."""
    body, headers = _problem(detail, retry_after_s)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def head_bytes(scope: Scope) -> int:
    """The size of a request's line and headers as sent (less the spaces around header values, which h11
    drops), from what uvicorn parsed into the scope."""
    query = scope["query_string"]
    target = len(scope["raw_path"]) + (len(query) + 1 if query else 0)
    line = len(scope["method"]) + 1 + target + len(" HTTP/") + len(scope["http_version"]) + 2
    return line + sum(len(name) + 2 + len(value) + 2 for name, value in scope["headers"]) + 2


class JsonH11Protocol(H11Protocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        settings = get_settings()
        self.client_timeout_s = settings.serve_client_timeout_s
        self.timeout_keep_alive = settings.serve_timeout_keep_alive_s
        # uvicorn's own check counts connections, and answers plain text: `_bounded` counts requests, as JSON.
        self.limit_concurrency = None
        self._max_requests = settings.serve_limit_concurrency
        self._max_per_client = settings.serve_limit_concurrency
        # A socket handed over (--fd, --uds) has no host to go by: dev mode stays off.
        self._bind_host = None if config.uds or config.fd is not None else config.host
        self.app = self._bounded(self.app)
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self._counted_client: str | None = None  # the address this connection counts against

    def _bounded(self, app: ASGIApp) -> ASGIApp:
        async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                scope[BIND_HOST] = self._bind_host
                if head_bytes(scope) > self._max_head_bytes:
                    await send_problem(send, 431, self._head_too_long())
                    return
                # This request's own task is counted already, hence > and not >=.
                if len(self.tasks) > self._max_requests:
                    self.logger.warning("Exceeded concurrency limit.")
                    await send_problem(send, 503, AT_LIMIT, retry_after_s=1)
                    return
            await app(scope, receive, send)

        return bounded

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:
            open_here = _open_per_client.setdefault(self.server_state, Counter())
            host = self.client[0]
            if open_here[host] >= self._max_per_client:
                self.logger.warning("Exceeded the open connections of one client address.")
                # Closed at once, without the lingering of `_answer_and_close`: a refusal must hold nothing.
                self.transport.write(problem_bytes(503, TOO_MANY_CONNECTIONS, retry_after_s=1))
                self.transport.close()
                return
            open_here[host] += 1
            self._counted_client = host
        self._arm_head_timer()  # a client that connects and says nothing is a slow client too

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a refused request: read only so that closing does not reset the connection
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is in: the body's deadline is the app's

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._counted_client is not None:
            open_here = _open_per_client[self.server_state]
            open_here[self._counted_client] -= 1
            if open_here[self._counted_client] <= 0:
                del open_here[self._counted_client]
            self._counted_client = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn inside its `except h11.RemoteProtocolError`: h11's status hint says which
        refusal it is (431: the request line and headers are too long)."""
        error = sys.exc_info()[1]
        status = getattr(error, "error_status_hint", 400)
        detail = self._head_too_long() if status == 431 else "invalid HTTP request"
        self._answer_and_close(problem_bytes(status if status in (400, 431, 501) else 400, detail))

    def _head_too_long(self) -> str:
        return f"the request line and headers are longer than {self._max_head_bytes} bytes"

    def _answer_and_close(self, response: bytes) -> None:
        """Writes a last response and closes gently. Closing a socket with unread request bytes (the rest of
        an overlong head) makes the kernel reset the connection, and the client may lose the response: so
        this end is shut for writing, and what still comes is read and dropped until the client closes
        (at most `client_timeout_s`)."""
        self._cancel_head_timer()
        self.transport.write(response)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self.loop.call_later(self.client_timeout_s, self.transport.close)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.client_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            detail = f"the request line and headers did not arrive within {self.client_timeout_s:g} s"
            response = problem_bytes(408, detail)
            if self.conn.trailing_data[0]:
                self._answer_and_close(response)  # part of a head came: the rest may still be on its way
            else:
                # Nothing came, so nothing can be reset: closed now, not held open for another timeout.
                self.transport.write(response)
                self.transport.close()
