"""The gate of every /v1 route: the caller is admitted (key, then rate limit) and the body is checked before
FastAPI reads it (`Gated`); a text over its limit is refused as FastAPI refuses any invalid field."""

from __future__ import annotations

import email.message
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from serving.auth import bind_host
from serving.deps import service

log = logging.getLogger("serving.gate")

# nginx's code for a client that closed its connection before the answer: never sent (nobody is there to
# read it), but it is what the latency metrics count the request as.
CLIENT_CLOSED_REQUEST = 499


def admit(request: Request) -> str:
    """The key check, then the rate limit: the caller's key id, or a 401 or 429."""
    state = service(request)
    key_id = state.keys.identify(request.headers.get("x-api-key"))
    if key_id is None:
        client = request.client.host if request.client else None
        if not state.keys.open_locally(bind_host(request.scope), client):
            raise HTTPException(401, "a valid API key is required (header X-API-Key)", {"WWW-Authenticate": "ApiKey"})
        key_id = "local-dev"
    wait = state.limiter.acquire(key_id)
    if wait:
        raise HTTPException(429, f"rate limit reached; retry in {wait} s", {"Retry-After": str(wait)})
    return key_id


async def check_json_text(request: Request) -> None:
    """A body is JSON text in UTF-8 (RFC 8259): FastAPI would take any content type, and its json.loads
    would guess UTF-16 or UTF-32 from the bytes. A NUL byte is never in JSON text, but it is valid UTF-8:
    UTF-16 without a byte-order mark is refused by that."""
    body = await request.body()  # kept by the request: FastAPI parses the same bytes after this
    if not body:
        return
    content_type = request.headers.get("content-type")
    if not content_type:  # FastAPI would parse it as JSON anyway; the README promises a 415
        raise HTTPException(415, "the body must be JSON (Content-Type: application/json)")
    parsed = email.message.Message()
    parsed["content-type"] = content_type
    subtype = parsed.get_content_subtype()
    if parsed.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise HTTPException(415, "the body must be JSON (Content-Type: application/json)")
    if parsed.get_content_charset("utf-8") not in ("utf-8", "utf8"):
        raise HTTPException(400, "the body must be JSON text in UTF-8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the body must be JSON text in UTF-8") from None
    if "\x00" in text:
        raise HTTPException(400, "the body must be JSON text in UTF-8")


class Gated(APIRoute):
    """A route whose caller is admitted (key, then rate limit) and whose body is checked before FastAPI reads
    and parses it: no key is a 401 whatever the body, malformed JSON included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def gated(request: Request) -> Response:
            # In a thread: the rate limit may ask Redis.
            request.state.key_id = await run_in_threadpool(admit, request)
            try:
                await check_json_text(request)
            except ClientDisconnect:  # a client that goes away mid-body is no error of the service
                log.info("%s %s: the client closed the connection before its body arrived", request.method, self.path)
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            return await handler(request)

        return gated


def check_length(text: str, field: str, limit: int) -> None:
    if len(text) > limit:
        raise RequestValidationError(
            [{"loc": ("body", field), "msg": f"String should have at most {limit} characters", "type": "too_long"}]
        )
