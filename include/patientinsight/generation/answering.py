"""One answer to a clinician's query: retrieve the cases, then the analysis. The API and
`patientinsight query` both return exactly this JSON."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from typing import Any

from patientinsight.generation.deadline import generate_safely
from patientinsight.generation.protocol import Analysis, Generator
from patientinsight.index.types import Filters
from patientinsight.retrieval.cases import CaseIndex, retrieve


def answer(
    text: str,
    k: int,
    filters: Filters | None,
    generate: bool,
    index: CaseIndex,
    generator: Generator,
    passages_per_case: int = 3,
    timeout_s: float = 30.0,
    compute: contextlib.AbstractContextManager[Any] | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """`compute` guards the CPU-bound part (encoding and search): on a small machine, queries that
    take turns finish sooner than queries that fight over the cores. `exclude`: case uids that no
    stage of the retrieval may see."""
    started = time.perf_counter()
    with compute or contextlib.nullcontext():
        cases, timings = retrieve(index, text, k, filters, passages_per_case, exclude)
    if generate:
        analysis, timings["generate"] = generate_safely(generator, text, cases, timeout_s)
    else:
        analysis = Analysis(generator="none", text=None)
    timings["total"] = (time.perf_counter() - started) * 1000
    return {
        "cases": [case.to_dict() for case in cases],
        "analysis": analysis.to_dict(),
        "index_version": index.version,
        "retriever": index.retriever,
        "timings_ms": {name: round(ms, 3) for name, ms in timings.items()},
    }
