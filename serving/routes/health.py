"""Operations, open to all: liveness, readiness (which index version is loaded) and the metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import service
from serving.schemas import Ready

router = APIRouter()


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
