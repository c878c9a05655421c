"""POST /v1/followup: a question about the cases of an answer, answered from those cases only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from patientinsight.generation.followup import UnknownCases, follow_up
from serving.bookkeeping import record_answer
from serving.deps import KeyId, Loaded, body_responses, service
from serving.gate import Gated, check_length
from serving.schemas import FollowUpRequest, FollowUpResponse, Problem

api = APIRouter(route_class=Gated)


@api.post(
    "/v1/followup",
    tags=["query"],
    response_model=FollowUpResponse,
    responses=body_responses(
        {404: {"model": Problem, "description": "A uid is not in the loaded index version (it may have switched)."}}
    ),
)
def followup(body: FollowUpRequest, request: Request, key_id: KeyId, index: Loaded) -> dict[str, Any]:
    """A question about the cases of an answer, answered by the configured generator from those cases only,
    citing them by their position in `uids` ([1] is the first). The extractive generator quotes their
    best-matching sentences. Limits, keys and audit as for /v1/query; the question is never logged."""
    state = service(request)
    check_length(body.question, "question", state.settings.max_query_chars)
    try:
        result = follow_up(body.question, body.uids, index, state.generator, state.settings.generator_timeout_s)
    except UnknownCases as exc:
        raise HTTPException(404, f"{exc}: ask the query again") from None
    asked = len(set(body.uids))  # the audit's k: the distinct cases asked about (repeats count once)
    uids = [case["patient_uid"] for case in result["cases"]]
    record_answer(
        state, "followup", key_id, body.question, asked, index.version, result["answer"], result["timings_ms"], uids
    )
    return result
