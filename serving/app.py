"""The query service: `uvicorn --factory serving.app:create_app` (or `serving.app:app`), or
`patientinsight serve`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from threadpoolctl import threadpool_limits

from patientinsight.embedding.encoder import make_embedder
from patientinsight.generation.factory import make_generator
from patientinsight.generation.protocol import Generator
from patientinsight.index.factory import make_index
from patientinsight.retrieval.cases import CaseIndex
from patientinsight.settings import Settings, get_settings
from serving.audit import AuditLog
from serving.auth import KeyChecker
from serving.follower import IndexFollower
from serving.limits import BodyDeadline, BodySizeLimit, RateLimiter
from serving.metrics import Metrics
from serving.observe import ObserveRequests
from serving.routes import PAGE_HEADERS, api, router
from serving.state import MisconfiguredGenerator, ServiceState

log = logging.getLogger("serving")


def _generator(settings: Settings) -> Generator:
    try:
        return make_generator(settings)
    except Exception as exc:  # a missing endpoint name must not stop the cases from being served
        log.error("generator %s is not usable: %s", settings.generator, exc)
        return MisconfiguredGenerator(
            settings.generator, f"the {settings.generator} generator is not configured: {exc}"
        )


def build_state(settings: Settings) -> ServiceState:
    metrics = Metrics()
    embedder = make_embedder(settings)
    index = make_index(settings)  # no Airflow in the serving image: Pinecone's key comes from PINECONE_API_KEY

    def load(version: str) -> CaseIndex:
        return CaseIndex.for_settings(index.open(version), embedder, settings)

    def switched(loaded: CaseIndex) -> None:
        metrics.index_records.set(loaded.count())
        metrics.index_info.info({"version": loaded.version, "retriever": loaded.retriever})
        metrics.index_switches.inc()

    def warm_up() -> None:
        # Loads the model before the first query needs it: the one that encodes the version's queries
        # (Embedder.for_version), which need not be the one configured for documents.
        current = follower.current
        (current.searcher.embedder if current is not None else embedder).embed_query("warm-up")

    follower = IndexFollower(
        index,
        load,
        settings.index_poll_s,
        on_switch=switched,
        on_error=lambda version: metrics.index_errors.inc(),
        warm_up=warm_up,
    )
    return ServiceState(
        settings=settings,
        follower=follower,
        generator=_generator(settings),
        keys=KeyChecker(settings.api_keys, settings.dev_mode),
        limiter=RateLimiter(
            settings.rate_limit_per_minute, settings.rate_limit_storage, on_fallback=metrics.rate_limit_fallbacks.inc
        ),
        audit=AuditLog(settings.audit_url, metrics),
        metrics=metrics,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # One BLAS thread: numpy's OpenBLAS threads and torch's threads otherwise fight over the cores
    # (measured: 52 ms -> 24 ms median per query on two cores, see STACK.md).
    threadpool_limits(limits=1, user_api="blas")
    state = build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.follower.start()
        log.info(
            "query service up: generator=%s dev_mode=%s keys=%d index=%s",
            settings.generator, settings.dev_mode, len(state.keys.keys), settings.index_dir,
        )  # fmt: skip
        yield
        state.follower.stop()
        state.audit.close()

    app = FastAPI(
        title="PatientInsight query API",
        version="1.0",
        description="Similar published patient cases for a patient description, and an analysis citing them.",
        lifespan=lifespan,
    )
    app.state.service = state

    def openapi() -> dict[str, Any]:
        # The text limit is a setting, so the document states it here rather than in the model.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema["components"]["schemas"]
            components["QueryRequest"]["properties"]["text"]["maxLength"] = settings.max_query_chars
            components["FollowUpRequest"]["properties"]["question"]["maxLength"] = settings.max_query_chars
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(router)
    app.include_router(api)
    app.mount("/static", StaticFiles(packages=[("serving", "static")]), name="static")
    app.add_exception_handler(RequestValidationError, _validation_error)

    app.add_middleware(ObserveRequests, metrics=state.metrics, extra_headers=PAGE_HEADERS)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outermost: it bounds the wait on the socket itself, and sees every response to close the connection of
    # one answered before its body arrived.
    app.add_middleware(BodyDeadline, timeout_s=settings.serve_client_timeout_s)
    return app


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field, without echoing the input (it may be patient text)."""
    errors: list[dict[str, Any]] = []
    if isinstance(exc, RequestValidationError):
        for error in exc.errors():
            loc = [str(part) for part in error.get("loc", ())]
            errors.append({"field": ".".join(p for p in loc if p != "body"), "loc": loc, "msg": error.get("msg", "")})
    return JSONResponse({"detail": errors}, status_code=422)


def __getattr__(name: str) -> Any:
    """`serving.app:app` builds the app on first use, so importing the module reads no settings."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
