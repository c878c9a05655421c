"""GET /v1/cases/{patient_uid}: one case of the loaded index version, with its whole text."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from patientinsight.records.columns import MAX_UID_CHARS
from serving.deps import ERRORS, KeyId, Loaded
from serving.gate import Gated
from serving.schemas import CaseDetail

api = APIRouter(route_class=Gated)


@api.get("/v1/cases/{patient_uid}", tags=["query"], response_model=CaseDetail, responses={**ERRORS, 404: {}})
def case(patient_uid: Annotated[str, Path(max_length=MAX_UID_CHARS)], key_id: KeyId, index: Loaded) -> dict[str, Any]:
    """One case of the loaded index version; an unknown uid is a 404."""
    found = index.case(patient_uid)
    if found is None:
        raise HTTPException(404, "no case with this patient_uid in the loaded index version")
    return {**found.to_dict(with_text=True), "index_version": index.version}
