"""The one local HTTP server behind the tests' stand-ins and stubs (Pinecone, OpenAI, the Kubernetes API, the
Airflow REST API, a readiness endpoint): a real ThreadingHTTPServer on 127.0.0.1, a free port, served from a
daemon thread, shut down and closed on exit. What a stand-in answers stays in its own handler; only the
plumbing is here.

    with LocalServer(Handler, state=state) as server:   # Handler's class attribute `state` set to `state`
        httpx.get(server.url + "/path")

`JsonHandler` is the handler base they share: quiet, JSON bodies in and out.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a keep-alive connection left open does not hold up the test run

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client dropping a keep-alive connection is normal; anything else is reported as usual."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class LocalServer:
    """A real HTTP server on 127.0.0.1 at a free port. The port is bound on construction (so `url` is known
    before the server starts); requests are served between `start()` and `stop()`, or inside `with`.

    Keyword arguments become class attributes of a subclass of `handler`: the way a handler reaches the
    state of its stand-in (`self.state`, `self.standin`...) without a closure."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], **attributes: Any) -> None:
        if attributes:
            handler = type(handler.__name__, (handler,), attributes)
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the port: connections to `url` are refused from here on."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JsonHandler(BaseHTTPRequestHandler):
    """A handler base that logs nothing and speaks JSON. HTTP/1.0 unless a subclass sets `protocol_version`."""

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_json(self) -> Any:
        """The request's JSON body; {} when there is none."""
        raw = self.read_body()
        return json.loads(raw) if raw else {}

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        """Answers `status` with `payload` as JSON (None: an empty body), and any extra headers."""
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def free_port() -> int:
    """A port nothing listens on now, for a server started in another process (moto, Airflow, the service)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
