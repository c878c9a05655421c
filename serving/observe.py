"""Request latency by route template, method and status class: pure ASGI, so it adds no task groups
around the request (a body-size refusal raised while reading stays a 413).

Every label value comes from a closed set, whatever clients send: the route template (never the raw path),
one of HTTP's standard methods, and the status class (2xx, 4xx, ...); anything else is "other". Otherwise
each unknown method or path would add a series to /metrics, and anyone could grow it without bound."""

from __future__ import annotations

import logging
import time
from http import HTTPMethod

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

log = logging.getLogger("serving.http")

METHODS = frozenset(method.value for method in HTTPMethod)
OTHER = "other"


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


def route_label(scope: Scope) -> str:
    """The template of the route that answered (`/v1/cases/{patient_uid}`, the `/static` mount), set by the
    router when it matched; "other" for a path that matched none."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else OTHER


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
            route, method = route_label(scope), method_label(scope["method"])
            self.metrics.requests.labels(route, method, status_label(status)).observe(elapsed)
            log.debug("%s %s %d %.1f ms", method, route, status, elapsed * 1000)
