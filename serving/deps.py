"""What the routes are given (FastAPI dependencies, with `Annotated` aliases): the service's state, the
caller's key id and the loaded index version; and the error responses every /v1 route documents."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from patientinsight.retrieval.cases import CaseIndex
from serving.schemas import Problem
from serving.state import ServiceState

NO_INDEX = (
    "no index version is published yet: run the ingest first (`make run`, the patient_ingest DAG, "
    "or `patientinsight ingest SOURCE`)"
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (its hash is configured).")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key (whatever the body)."},
    408: {"model": Problem, "description": "The request body did not arrive in time."},
    413: {"model": Problem, "description": "Request body too large."},
    429: {"model": Problem, "description": "Rate limit reached; see Retry-After."},
    503: {"model": Problem, "description": "No index is loaded yet."},
}


def service(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def caller(request: Request, key: Annotated[str | None, Security(_api_key)] = None) -> str:
    """The key id that `Gated` admitted (the parameter declares the key header in the OpenAPI document)."""
    key_id: str = request.state.key_id
    return key_id


def loaded(request: Request) -> CaseIndex:
    index = service(request).follower.current
    if index is None:
        raise HTTPException(503, NO_INDEX, {"Retry-After": "30"})
    return index


KeyId = Annotated[str, Depends(caller)]
Loaded = Annotated[CaseIndex, Depends(loaded)]


def body_responses(extra: dict[int | str, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    """The documented responses of a /v1 route that takes a JSON body: ERRORS, the body's own, and `extra`
    (in the order of their codes, as the OpenAPI document has always listed them)."""
    return {
        **ERRORS,
        400: {"model": Problem, "description": "The body is not UTF-8 JSON text."},
        **(extra or {}),
        415: {"model": Problem, "description": "The body is not JSON (Content-Type: application/json)."},
        422: {},
    }
