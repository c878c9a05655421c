"""uvicorn's h11 protocol, with what it lacks against hostile clients. `patientinsight serve` and the image
(`uvicorn ... --http serving.protocol:JsonH11Protocol`) run it, and its bounds come from the settings, so
they hold however the service is started:

- a request's head (request line and headers) must arrive within `serve_client_timeout_s`: uvicorn bounds
  only the idle time between requests, so a client trickling its headers would hold a connection for ever
  (the body's deadline is the app's, `serving.limits.BodyDeadline`);
- an idle kept-alive connection is closed after `serve_timeout_keep_alive_s` (uvicorn's timeout_keep_alive);
- beyond `serve_limit_concurrency` open connections or requests in flight, a 503 at once, with Retry-After;
- uvicorn's own refusals are JSON problems like the app's: a malformed request, or a request line and
  headers longer than h11's bound (16 KiB), get `{"detail": ...}` (400, 431), not plain text.

h11, not httptools where that is installed: a laptop and the image behave the same.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import ServerState

from patientinsight.settings import get_settings


def problem_bytes(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON problem body, closing the connection (written on the socket
    where no request is there to answer through ASGI)."""
    body = json.dumps({"detail": detail}).encode()
    head = f"HTTP/1.1 {status} {STATUS_PHRASES[status].decode()}\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class JsonH11Protocol(H11Protocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        settings = get_settings()
        self.client_timeout_s = settings.serve_client_timeout_s
        self.timeout_keep_alive = settings.serve_timeout_keep_alive_s
        # uvicorn's own concurrency check answers plain text: the same check is made in `_limited`, as JSON.
        self.limit_concurrency = None
        self._max_concurrency = settings.serve_limit_concurrency
        self.app = self._limited(self.app)
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE

    def _limited(self, app: ASGIApp) -> ASGIApp:
        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            limit = self._max_concurrency
            # This connection and this request's task are counted already, hence > and not >=.
            if scope["type"] == "http" and (len(self.connections) > limit or len(self.tasks) > limit):
                self.logger.warning("Exceeded concurrency limit.")
                body = json.dumps({"detail": "the service is at its concurrency limit; retry shortly"}).encode()
                headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"connection", b"close")]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return limited

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn inside its `except h11.RemoteProtocolError`: h11's status hint says which
        refusal it is (431: the request line and headers are too long)."""
        error = sys.exc_info()[1]
        status = getattr(error, "error_status_hint", 400)
        detail = (
            f"the request line and headers are longer than {self._max_head_bytes} bytes"
            if status == 431
            else "invalid HTTP request"
        )
        self._answer_and_close(problem_bytes(status if status in (400, 431, 501) else 400, detail))

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
            self._answer_and_close(problem_bytes(408, detail))
