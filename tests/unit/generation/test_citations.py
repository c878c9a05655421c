"""The citations of an analysis: [n] in its text resolved to the uids of the cases at those positions."""

from __future__ import annotations

from patientinsight.generation.protocol import resolve_citations
from patientinsight.retrieval.cases import Case


def _case(uid: str) -> Case:
    return Case(patient_uid=uid, pmid="1", title="t", age_years=None, sex=None)


def test_citations_resolve_positions_to_uids_in_order_of_use() -> None:
    cases = [_case("u1"), _case("u2"), _case("u3")]
    text = "Shared findings [2]. Treated alike [1, 3] and [2-3]; not a case [7] or [0]."
    assert resolve_citations(text, cases) == [
        {"ref": 2, "patient_uid": "u2"},
        {"ref": 1, "patient_uid": "u1"},
        {"ref": 3, "patient_uid": "u3"},
    ]
