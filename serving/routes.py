"""The HTTP routes: health, readiness, metrics, the query API and the page."""

from __future__ import annotations

import email.message
import logging
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from patientinsight.index.types import Filters
from patientinsight.retrieval.answering import answer, text_fingerprint
from patientinsight.retrieval.cases import CaseIndex
from patientinsight.retrieval.followup import UnknownCases, follow_up
from serving.schemas import CaseDetail, FollowUpRequest, FollowUpResponse, Problem, QueryRequest, QueryResponse, Ready
from serving.state import ServiceState

log = logging.getLogger("serving.query")

NO_INDEX = (
    "no index version is published yet: run the ingest first (`make run`, the patient_ingest DAG, "
    "or `patientinsight ingest SOURCE`)"
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (its hash is configured).")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key (whatever the body)."},
    408: {"model": Problem, "description": "The request body did not arrive in time."},
    413: {"model": Problem, "description": "Request body too large."},
    429: {"model": Problem, "description": "Rate limit reached; see Retry-After."},
    503: {"model": Problem, "description": "No index is loaded yet."},
}


def service(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def admit(request: Request) -> str:
    """The key check, then the rate limit: the caller's key id, or a 401 or 429."""
    state = service(request)
    server = request.scope.get("server")
    key_id = state.keys.identify(request.headers.get("x-api-key"))
    if key_id is None:
        if not state.keys.open_locally(server[0] if server else None, request.client.host if request.client else None):
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
    if content_type:
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
            await check_json_text(request)
            return await handler(request)

        return gated


def caller(request: Request, key: Annotated[str | None, Security(_api_key)] = None) -> str:
    """The key id that `Gated` admitted (the parameter declares the key header in the OpenAPI document)."""
    key_id: str = request.state.key_id
    return key_id


router = APIRouter()
api = APIRouter(route_class=Gated)  # /v1: key, rate limit, then the body


def loaded(request: Request) -> CaseIndex:
    index = service(request).follower.current
    if index is None:
        raise HTTPException(503, NO_INDEX, {"Retry-After": "30"})
    return index


@router.get("/healthz", tags=["operations"])
def healthz() -> dict[str, str]:
    """The process lives."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], response_model=Ready, responses={503: {"model": Ready}})
def readyz(request: Request) -> JSONResponse:
    """Ready when an index version is loaded (and says which)."""
    state = service(request)
    index = state.follower.current
    body = Ready(
        ready=index is not None,
        index_version=index.version if index else None,
        records=index.count() if index else 0,
        model_warm=state.follower.warmed.is_set(),
        synthetic_records=index.synthetic_count if index else 0,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", tags=["operations"], response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@api.post(
    "/v1/query",
    tags=["query"],
    response_model=QueryResponse,
    responses={
        **_ERRORS,
        400: {"model": Problem, "description": "The body is not UTF-8 JSON text."},
        415: {"model": Problem, "description": "The body is not JSON (Content-Type: application/json)."},
        422: {},
    },
)
def query(
    body: QueryRequest,
    request: Request,
    key_id: Annotated[str, Depends(caller)],
    index: Annotated[CaseIndex, Depends(loaded)],
) -> dict[str, Any]:
    """The most similar published cases to a patient description, and an analysis grounded in them."""
    state = service(request)
    _check_length(body.text, "text", state.settings.max_query_chars)
    filters = Filters(body.filters.age_min, body.filters.age_max, body.filters.sex)
    result = answer(
        body.text,
        body.k,
        filters,
        body.generate,
        index,
        state.generator,
        state.settings.passages_per_case,
        state.settings.generator_timeout_s,
        compute=state.compute,
        exclude=body.exclude,
    )
    _observe(state, result)
    fingerprint = text_fingerprint(body.text)
    uids = [case["patient_uid"] for case in result["cases"]]
    analysis = result["analysis"]
    log.info(
        "query key=%s len=%d sha=%s k=%d cases=%d version=%s generator=%s error=%s ms=%.1f",
        key_id, len(body.text), fingerprint, body.k, len(uids), index.version,
        analysis["generator"], bool(analysis["error"]), result["timings_ms"]["total"],
    )  # fmt: skip
    state.audit.record(
        key_id, index.version, body.k, len(body.text), fingerprint, uids, analysis["generator"], analysis["error"]
    )
    return result


def _check_length(text: str, field: str, limit: int) -> None:
    if len(text) > limit:
        raise RequestValidationError(
            [{"loc": ("body", field), "msg": f"String should have at most {limit} characters", "type": "too_long"}]
        )


@api.post(
    "/v1/followup",
    tags=["query"],
    response_model=FollowUpResponse,
    responses={
        **_ERRORS,
        400: {"model": Problem, "description": "The body is not UTF-8 JSON text."},
        404: {"model": Problem, "description": "A uid is not in the loaded index version (it may have switched)."},
        415: {"model": Problem, "description": "The body is not JSON (Content-Type: application/json)."},
        422: {},
    },
)
def followup(
    body: FollowUpRequest,
    request: Request,
    key_id: Annotated[str, Depends(caller)],
    index: Annotated[CaseIndex, Depends(loaded)],
) -> dict[str, Any]:
    """A question about the cases of an answer, answered by the configured generator from those cases only,
    citing them by their position in `uids` ([1] is the first). The extractive generator quotes their
    best-matching sentences. Limits, keys and audit as for /v1/query; the question is never logged."""
    state = service(request)
    _check_length(body.question, "question", state.settings.max_query_chars)
    try:
        result = follow_up(body.question, body.uids, index, state.generator, state.settings.generator_timeout_s)
    except UnknownCases as exc:
        raise HTTPException(404, f"{exc}: ask the query again") from None
    answer_ = result["answer"]
    m = state.metrics
    m.generation.labels(answer_["generator"], "error" if answer_["error"] else "ok").observe(
        result["timings_ms"]["generate"] / 1000
    )
    for kind, count in (answer_["usage"] or {}).items():
        m.tokens.labels(answer_["generator"], kind.removesuffix("_tokens")).inc(count)
    fingerprint = text_fingerprint(body.question)
    uids = [case["patient_uid"] for case in result["cases"]]
    log.info(
        "followup key=%s len=%d sha=%s cases=%d version=%s generator=%s error=%s ms=%.1f",
        key_id, len(body.question), fingerprint, len(uids), index.version,
        answer_["generator"], bool(answer_["error"]), result["timings_ms"]["total"],
    )  # fmt: skip
    state.audit.record(
        key_id, index.version, len(uids), len(body.question), fingerprint, uids, answer_["generator"], answer_["error"]
    )
    return result


def _observe(state: ServiceState, result: dict[str, Any]) -> None:
    timings, analysis, m = result["timings_ms"], result["analysis"], state.metrics
    m.retrieval.observe(timings["search"] / 1000)
    if "generate" in timings:
        outcome = "error" if analysis["error"] else "ok"
        m.generation.labels(analysis["generator"], outcome).observe(timings["generate"] / 1000)
    for kind, count in (analysis["usage"] or {}).items():
        m.tokens.labels(analysis["generator"], kind.removesuffix("_tokens")).inc(count)


@api.get("/v1/cases/{patient_uid}", tags=["query"], response_model=CaseDetail, responses={**_ERRORS, 404: {}})
def case(
    patient_uid: Annotated[str, Path(max_length=128)],
    key_id: Annotated[str, Depends(caller)],
    index: Annotated[CaseIndex, Depends(loaded)],
) -> dict[str, Any]:
    """One case of the loaded index version; an unknown uid is a 404."""
    found = index.case(patient_uid)
    if found is None:
        raise HTTPException(404, "no case with this patient_uid in the loaded index version")
    return {**found.to_dict(with_text=True), "index_version": index.version}


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def page() -> HTMLResponse:
    html = resources.files("serving").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers=PAGE_HEADERS)


# The page loads only its own script and style; record text is inserted as text, never as HTML.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
