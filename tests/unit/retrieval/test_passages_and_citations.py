"""The parts of an answer besides ranking: the passages shown for a case, and the citations of an analysis."""

from __future__ import annotations

from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.generation import resolve_citations
from patientinsight.retrieval.passages import best_passages


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


def test_passages_are_the_sentences_that_match_best() -> None:
    text = (
        "A 60-year-old man was admitted. He had crushing chest pain radiating to the left arm. "
        "His mother had diabetes. ST-segment elevation was seen in the inferior leads."
    )
    passages = best_passages("chest pain to the left arm, ST elevation", text, 2)
    assert passages == [
        "He had crushing chest pain radiating to the left arm.",
        "ST-segment elevation was seen in the inferior leads.",
    ]
