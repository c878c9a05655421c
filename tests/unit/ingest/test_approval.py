"""The approver's text of a held version: reason in one sentence, the numbers side by side per query mode
with their query counts, the margin over BM25 where measured, and the MLflow link. No Airflow."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from patientinsight.evaluation.gate import decide
from patientinsight.ingest.approval import approval_body, held_sentence

URL = "http://127.0.0.1:5000/#/runs/0123abcd"


def result(queries: int, mrr: float, reference: float, low: float, high: float) -> dict[str, Any]:
    return {
        "queries": queries,
        "mrr": mrr,
        "reference_mrr": reference,
        "difference": round(mrr - reference, 6),
        "interval_95": [low, high],
    }


def against_published() -> dict[str, Any]:
    """Short queries fell against the published version (and the vectors with them); full ones did not."""
    return {
        "retriever": "hybrid_rerank",
        "protocol": "leave_one_out",
        "modes": {
            "short": {
                "bm25": result(52, 0.7300, 0.7000, 0.0050, 0.0550),
                "published": result(48, 0.7125, 0.8310, -0.1620, -0.0790),
                "vectors": result(48, 0.4010, 0.6020, -0.2650, -0.1400),
            },
            "full": {
                "published": result(48, 0.9950, 1.0, -0.0150, 0.0),
                "vectors": result(48, 0.9000, 0.9100, -0.0400, 0.0200),
            },
        },
    }


def first_version() -> dict[str, Any]:
    """No comparable published version: only the margin over BM25 on the new version's own queries."""
    return {
        "retriever": "hybrid_rerank",
        "protocol": "leave_one_out",
        "modes": {
            "short": {"own": result(40, 0.5500, 0.7900, -0.3100, -0.1700)},
            "full": {"own": {"queries": 0}},
        },
        "vectors_not_comparable": "the published version was embedded with another model or strategy",
    }


def test_the_numbers_stand_side_by_side_per_mode_with_their_query_counts() -> None:
    comparison = against_published()
    decision = decide(comparison, 0.02, 30)
    assert decision["needs_approval"]
    body = approval_body({"comparison": comparison}, decision, URL)

    lines = body.splitlines()
    header = next(line for line in lines if line.startswith("| query mode"))
    assert "| published MRR | new MRR | difference |" in header
    assert "| short | `hybrid_rerank` | 48 | 0.8310 | 0.7125 | -0.1185 | -0.1620 to -0.0790 | **held** |" in lines
    assert "| short | `dense` | 48 | 0.6020 | 0.4010 | -0.2010 | -0.2650 to -0.1400 | **held** |" in lines
    assert "| full | `hybrid_rerank` | 48 | 1.0000 | 0.9950 | -0.0050 | -0.0150 to +0.0000 | ok |" in lines
    assert "| full | `dense` | 48 | 0.9100 | 0.9000 | -0.0100 | -0.0400 to +0.0200 | ok |" in lines
    # Measured beside the published comparison, shown for the approver, not judged by the gate.
    assert "Margin over BM25" in body
    bm25 = "| short | `hybrid_rerank` | 52 | 0.7000 | 0.7300 | +0.0300 | +0.0050 to +0.0550 | not judged (shown"
    assert any(line.startswith(bm25) for line in lines)
    assert not decide({"modes": {"short": {"bm25": result(52, 0.1, 0.9, -0.9, -0.7)}}}, 0.02, 30)["needs_approval"]
    assert f"[Open the run in MLflow]({URL})" in body
    assert "Approve" in body and "Reject" in body


def test_the_reason_is_one_sentence_naming_what_fell() -> None:
    comparison = against_published()
    sentence = held_sentence(comparison, decide(comparison, 0.02, 30))
    assert sentence == (
        "The new version is held because its MRR fell by more than the allowed 0.02, beyond the per-query "
        "spread, on short queries against the published version and short queries against the published "
        "version's vectors (dense retrieval)."
    )
    assert sentence.count(". ") == 0 and sentence.endswith(".")
    body = approval_body({"comparison": comparison}, decide(comparison, 0.02, 30), URL)
    assert body.splitlines()[0] == sentence  # the first thing the approver reads


def test_the_margin_over_bm25_when_the_gate_measured_it() -> None:
    comparison = first_version()
    decision = decide(comparison, 0.02, 30)
    assert decision["needs_approval"]
    body = approval_body({"comparison": comparison}, decision, URL)

    assert "on short queries against BM25 on the same version." in body.splitlines()[0]
    assert "| query mode | retriever | queries | BM25 MRR | new MRR | difference |" in body
    assert "| short | `hybrid_rerank` | 40 | 0.7900 | 0.5500 | -0.2400 | -0.3100 to -0.1700 | **held** |" in body
    assert "| full | `hybrid_rerank` | 0 | – | – | – | – | not judged (no queries) |" in body
    assert "Not compared: the published version was embedded with another model or strategy." in body


def test_too_few_queries_are_shown_as_not_judged() -> None:
    comparison = against_published()
    comparison["modes"]["full"]["published"] = result(12, 0.5, 0.9, -0.6, -0.2)
    body = approval_body({"comparison": comparison}, decide(comparison, 0.02, 30), URL)
    assert "| full | `hybrid_rerank` | 12 | 0.9000 | 0.5000 | -0.4000 | -0.6000 to -0.2000 | not judged" in body
    assert "full queries against the published version" not in body.splitlines()[0]


def test_without_a_link_or_a_hold_it_still_says_something_useful() -> None:
    comparison = against_published()
    comparison["modes"]["short"] = {"published": result(48, 0.83, 0.8310, -0.01, 0.01)}
    decision = decide(comparison, 0.02, 30)
    body = approval_body({"comparison": comparison}, decision, None)
    assert body.splitlines()[0] == f"The gate says: {decision['reason']}."
    assert "no MLflow link" in body
    skipped = approval_body({"skipped": "evaluation is off"}, {"reason": "gate skipped", "max_mrr_drop": 0.02}, URL)
    assert "Not compared" in skipped and URL in skipped


def test_it_imports_no_airflow() -> None:
    code = "import sys, patientinsight.ingest.approval; print([m for m in sys.modules if m.startswith('airflow')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
