"""The publish gate compares like with like: growth alone publishes on its own, broken vectors wait
for a person, and too few queries skip the gate with a line that says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patientinsight.embedding.encoder import make_embedder
from patientinsight.evaluation.gate import decide, query_cap
from patientinsight.index.factory import make_index
from patientinsight.index.lexical import bm25_params, lexical_index_hook
from patientinsight.index.types import META_COLUMNS, EmbeddedBatch
from patientinsight.ingest.run import run_ingest
from patientinsight.ingest.steps import evaluate_candidate, gate_decision
from patientinsight.settings import Settings
from tests.helpers import REAL_CSV


def judged(queries: int, mrr: float, reference: float, interval: tuple[float, float]) -> dict[str, Any]:
    return {
        "queries": queries, "mrr": mrr, "reference_mrr": reference,
        "difference": round(mrr - reference, 4), "interval_95": list(interval),
    }  # fmt: skip


def comparison(**modes: dict[str, Any]) -> dict[str, Any]:
    return {"retriever": "hybrid_rerank", "protocol": "leave_one_out", "modes": modes}


def test_decision_needs_a_material_and_significant_drop() -> None:
    ok = {"own": judged(80, 0.80, 0.79, (-0.01, 0.03))}
    assert decide(comparison(short=ok), 0.02, 30)["needs_approval"] is False
    noisy = {"published": judged(80, 0.75, 0.80, (-0.11, 0.01))}  # a large drop, but within the spread
    assert decide(comparison(short=noisy), 0.02, 30)["needs_approval"] is False
    small = {"published": judged(80, 0.79, 0.80, (-0.015, -0.005))}  # significant, but within the allowance
    assert decide(comparison(short=small), 0.02, 30)["needs_approval"] is False
    worse = {"published": judged(80, 0.70, 0.80, (-0.14, -0.06))}
    decision = decide(comparison(short=ok, full=worse), 0.02, 30)
    assert decision["needs_approval"] is True and not decision["skipped"]
    assert "MRR fell by 0.1000 on 80 full queries against the published version" in decision["reason"]


def test_too_few_queries_skip_the_gate_and_say_so() -> None:
    few = {"published": judged(12, 0.2, 0.9, (-0.9, -0.5)), "own": judged(12, 0.2, 0.9, (-0.9, -0.5))}
    decision = decide(comparison(short=few, full=few), 0.02, 30)
    assert decision["needs_approval"] is False and decision["skipped"] is True
    assert decision["reason"].startswith("gate skipped: too few queries to judge")
    assert "12 queries, fewer than 30" in decision["reason"]


def rebuilt_with(settings: Settings, vectors_of: Any) -> str:
    """A new version of the published records through the index's own builder, with other vectors."""
    index = make_index(settings)
    reader = index.open(index.published() or "")
    records = reader.frame([*META_COLUMNS, "chunk_count"])
    batch = EmbeddedBatch(records.loc[:, list(META_COLUMNS)], vectors_of(np.asarray(reader.vectors)),
                          records["chunk_count"].to_numpy())  # fmt: skip
    builder = index.builder(None, reader.manifest)
    builder.upsert(batch)
    params = bm25_params(settings)
    return builder.commit(staged_extras=lexical_index_hook(params))


def shuffled(vectors: np.ndarray) -> np.ndarray:
    return vectors[np.random.default_rng(3).permutation(len(vectors))]


def random_model(vectors: np.ndarray) -> np.ndarray:
    """What a model that knows nothing of medicine would give: random unit vectors."""
    out = np.random.default_rng(4).standard_normal(vectors.shape).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.realdata
def test_growth_publishes_and_broken_vectors_wait(real_data_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    source = str(real_data_dir / REAL_CSV)
    first = run_ingest(source, settings, limit=500, run_id="first")
    assert first["published"], first["gate"]

    grown = run_ingest(source, settings, run_id="growth")  # 500 more real records, same settings
    assert grown["embedded"] == grown["indexed"] - first["indexed"] > 400
    assert grown["published"] and grown["gate"]["needs_approval"] is False, grown["gate"]
    assert not grown["gate"]["skipped"] and "against the published version" in grown["gate"]["reason"]
    for mode in ("short", "full"):
        assert grown["evaluation"]["comparison"]["modes"][mode]["published"]["queries"] >= settings.gate_min_queries
    # Doubling the records is no small change: the gate runs its full query budget.
    assert grown["evaluation"]["comparison"]["max_queries"] == settings.eval_max_queries
    assert grown["evaluation"]["comparison"]["changed_records"] == grown["embedded"]

    index = make_index(settings)
    for broken in (shuffled, random_model):
        version = rebuilt_with(settings, broken)
        evaluation = evaluate_candidate(index, version, make_embedder(settings), settings)
        decision = gate_decision(evaluation, settings.gate_max_mrr_drop, settings.gate_min_queries)
        # The same records with other vectors change no content: judged on the small-change budget, where
        # broken vectors must still show.
        assert evaluation["comparison"]["changed_records"] == 0
        assert evaluation["comparison"]["max_queries"] == settings.gate_small_change_queries
        assert decision["needs_approval"] is True, (broken.__name__, decision)
        assert "MRR fell" in decision["reason"]
    published, rebuilt = index.open(index.published() or ""), index.open(version)
    assert query_cap(rebuilt, published, settings) == (settings.gate_small_change_queries, 0)
    no_small_budget = settings.model_copy(update={"gate_small_change_queries": 0})
    assert query_cap(rebuilt, published, no_small_budget) == (settings.eval_max_queries, 0)
    assert query_cap(published, None, settings) == (settings.eval_max_queries, None)
