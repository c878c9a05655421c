"""The HTTP routes, one module per resource: health (liveness, readiness, metrics), query, followup, cases
and the page. `router` is open; every route of `api` (/v1) passes the gate (serving/gate.py) first."""

from __future__ import annotations

from fastapi import APIRouter

from serving.gate import Gated
from serving.routes import cases, followup, health, page, query
from serving.routes.page import PAGE_HEADERS

router = APIRouter()
router.include_router(health.router)
router.include_router(page.router)

api = APIRouter(route_class=Gated)  # /v1: key, rate limit, then the body
for resource in (query, followup, cases):
    api.include_router(resource.api)

__all__ = ["PAGE_HEADERS", "api", "router"]
