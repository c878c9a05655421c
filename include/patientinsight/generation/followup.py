"""A follow-up question about the cases of an answer ("which of these were treated surgically?"),
answered by the configured generator from those cases only, with citations by their position."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from patientinsight.generation.deadline import follow_up_safely
from patientinsight.generation.protocol import Generator
from patientinsight.retrieval.cases import CaseIndex


class UnknownCases(LookupError):
    """Some uids are not in the loaded index version (it may have switched since the answer)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"{len(missing)} of the cases are not in the loaded index version")
        self.missing = missing


def follow_up(
    question: str, uids: Sequence[str], index: CaseIndex, generator: Generator, timeout_s: float = 30.0
) -> dict[str, Any]:
    """The answer, the cases it was asked about (numbered as cited), the version and the timings in ms.
    Repeated uids count once; an unknown uid raises UnknownCases."""
    started = time.perf_counter()
    ordered = list(dict.fromkeys(uids))
    found = {uid: index.case(uid) for uid in ordered}
    missing = [uid for uid, case in found.items() if case is None]
    if missing:
        raise UnknownCases(missing)
    cases = [case for case in found.values() if case is not None]
    analysis, generate_ms = follow_up_safely(generator, question, cases, timeout_s)
    return {
        "answer": analysis.to_dict(),
        "cases": [
            {"ref": ref, "patient_uid": case.patient_uid, "title": case.title}
            for ref, case in enumerate(cases, start=1)
        ],
        "index_version": index.version,
        "timings_ms": {
            "generate": round(generate_ms, 3),
            "total": round((time.perf_counter() - started) * 1000, 3),
        },
    }
