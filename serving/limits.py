"""Request limits: the body's size and the time it may take to arrive (both checked as it is read), and a
per-key rate limit (the `limits` library, shared by all replicas through Redis when so configured)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable

from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("serving.limits")


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through as a 413 rather than a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    """413 when Content-Length says too much, or when a chunked body grows past the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Checked when the body is first read, not here: a request without a valid key gets its 401 first.
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            if too_large:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class BodyTimedOut(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(status_code=408, detail=f"the request body did not arrive within {timeout_s:g} s")


class BodyDeadline:
    """408 when a request's body has not all arrived `timeout_s` after its head. uvicorn has no such timeout:
    a client that declares 100 bytes and sends 10 would hold its connection and a worker for ever.

    A response sent before the whole body arrived (a 401, 408, 413, or a route that reads no body) closes the
    connection, so the rest of the body is never waited for either."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        complete = headers.get(b"content-length", b"0") == b"0" and b"transfer-encoding" not in headers
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def bounded() -> Message:
            nonlocal complete
            if complete:  # after the body, receive() waits for a disconnect: that wait is not bounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                raise BodyTimedOut(self.timeout_s) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, bounded, closing)


class RateLimiter:
    """At most `per_minute` requests per key in any 60 s (a moving window, from the `limits` library).

    `storage` is a `limits` storage URI: `memory://` counts in this process only (with N replicas a key gets
    N times the limit); `redis://host:6379/0` (or `rediss://`, `redis+sentinel://`) is one count for all
    replicas. When the shared store fails, each process counts alone for `retry_s`, then tries it again:
    logged once per outage and counted by `on_fallback`, never a failed request."""

    def __init__(
        self,
        per_minute: int,
        storage: str = "memory://",
        on_fallback: Callable[[], None] | None = None,
        retry_s: float = 10.0,
        store_timeout_s: float = 0.25,
    ) -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.local = MovingWindowRateLimiter(MemoryStorage())
        self.shared: MovingWindowRateLimiter | None = None
        if not storage.startswith("memory://"):
            # Short socket timeouts: a store that does not answer must not hold up the request.
            options: dict[str, float | str | bool] = {"socket_timeout": store_timeout_s}
            options["socket_connect_timeout"] = store_timeout_s
            self.shared = MovingWindowRateLimiter(storage_from_string(storage, wrap_exceptions=True, **options))
        self.on_fallback = on_fallback or (lambda: None)
        self.retry_s = retry_s
        self._down_until = 0.0  # monotonic time until which the shared store is not tried
        self._lock = threading.Lock()

    def acquire(self, key: str) -> int:
        """0 when the request may go on, else the whole seconds to wait (for Retry-After)."""
        if self.shared is not None:
            if time.monotonic() >= self._down_until:
                try:
                    wait = self._acquire(self.shared, key)
                except StorageError as exc:
                    self._store_failed(exc)
                else:
                    self._store_answered()
                    return wait
            self.on_fallback()
        return self._acquire(self.local, key)

    def _acquire(self, limiter: MovingWindowRateLimiter, key: str) -> int:
        if limiter.hit(self.item, key):
            return 0
        reset_at = limiter.get_window_stats(self.item, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def _store_failed(self, exc: StorageError) -> None:
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + self.retry_s
        if first:
            log.warning("rate-limit store unreachable (%s): each process counts alone until it answers", exc)

    def _store_answered(self) -> None:
        if self._down_until:
            with self._lock:
                self._down_until = 0.0
            log.info("rate-limit store answers again: the limit is shared again")
