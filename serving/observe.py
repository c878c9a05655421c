"""Request latency by route template, method and status: pure ASGI, so it adds no task groups
around the request (a body-size refusal raised while reading stays a 413)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

log = logging.getLogger("serving.http")


class ObserveRequests:
    def __init__(self, app: ASGIApp, metrics: Metrics, extra_headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        # Added to responses under /static (the page's script and style).
        self.static_headers = [(k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        is_static = scope["path"].startswith("/static/")

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if is_static:
                    message = {**message, "headers": [*message.get("headers", []), *self.static_headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed = time.perf_counter() - started
            # The route template, never the raw path: uids in paths would explode the label set.
            route = getattr(scope.get("route"), "path", None) or ("/static" if is_static else "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).observe(elapsed)
            log.debug("%s %s %d %.1f ms", scope["method"], route, status, elapsed * 1000)
