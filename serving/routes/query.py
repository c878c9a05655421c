"""POST /v1/query: the most similar published cases to a patient description, and their analysis."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from patientinsight.generation.answering import answer
from patientinsight.index.types import Filters
from serving.bookkeeping import record_answer
from serving.deps import KeyId, Loaded, body_responses, service
from serving.gate import Gated, check_length
from serving.schemas import QueryRequest, QueryResponse

api = APIRouter(route_class=Gated)


@api.post(
    "/v1/query",
    tags=["query"],
    response_model=QueryResponse,
    responses=body_responses(),
)
def query(body: QueryRequest, request: Request, key_id: KeyId, index: Loaded) -> dict[str, Any]:
    """The most similar published cases to a patient description, and an analysis grounded in them."""
    state = service(request)
    check_length(body.text, "text", state.settings.max_query_chars)
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
    uids = [case["patient_uid"] for case in result["cases"]]
    record_answer(
        state, "query", key_id, body.text, body.k, index.version, result["analysis"], result["timings_ms"], uids
    )
    return result
