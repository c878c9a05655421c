"""What the approver of a held version reads (the `approve_publish` task of patient_ingest, Required
Actions in the Airflow UI): the reason in one sentence, the gate's numbers side by side per query mode
(published against new, and the margin over BM25, each with its number of queries), and a link to the
run's MLflow run. Markdown, as the Required Actions page renders it. No Airflow import: the DAG renders
what `approval_body` returns."""

from __future__ import annotations

from typing import Any

from patientinsight.evaluation.gate import CHECKS

DECISION = "**Approve** publishes the new version; **Reject** (or no answer in two days) keeps the published one."


def _held(result: dict[str, Any], max_mrr_drop: float) -> bool:
    """The gate's rule (patientinsight.evaluation.gate.decide): material and beyond the per-query spread."""
    return bool(result["difference"] < -max_mrr_drop and result["interval_95"][1] < 0)


def _verdict(result: dict[str, Any], max_mrr_drop: float, min_queries: int) -> str:
    if result["queries"] < min_queries:
        return f"not judged (fewer than {min_queries} queries)"
    return "**held**" if _held(result, max_mrr_drop) else "ok"


def _row(
    mode: str, retriever: str, result: dict[str, Any], max_mrr_drop: float, min_queries: int, judged: bool = True
) -> str:
    if not result["queries"]:
        return f"| {mode} | `{retriever}` | 0 | – | – | – | – | not judged (no queries) |"
    low, high = result["interval_95"]
    verdict = _verdict(result, max_mrr_drop, min_queries) if judged else "not judged (shown for comparison)"
    return (
        f"| {mode} | `{retriever}` | {result['queries']} | {result['reference_mrr']:.4f} | {result['mrr']:.4f} "
        f"| {result['difference']:+.4f} | {low:+.4f} to {high:+.4f} | {verdict} |"
    )


def _table(reference: str, rows: list[str]) -> list[str]:
    return [
        f"| query mode | retriever | queries | {reference} MRR | new MRR | difference | 95% interval | gate |",
        "|---|---|---:|---:|---:|---:|---|---|",
        *rows,
    ]


def held_sentence(comparison: dict[str, Any], decision: dict[str, Any]) -> str:
    """Why the version waits, in one sentence."""
    max_mrr_drop = decision["max_mrr_drop"]
    held = [
        f"{mode} queries against {name}"
        for mode, row in comparison.get("modes", {}).items()
        for check, name in CHECKS.items()
        if check in row
        and row[check]["queries"] >= max(decision.get("min_queries", 0), 1)
        and _held(row[check], max_mrr_drop)
    ]
    if not held:
        return f"The gate says: {decision['reason']}."
    where = held[0] if len(held) == 1 else ", ".join(held[:-1]) + " and " + held[-1]
    return (
        f"The new version is held because its MRR fell by more than the allowed {max_mrr_drop}, "
        f"beyond the per-query spread, on {where}."
    )


def approval_body(evaluation: dict[str, Any], decision: dict[str, Any], mlflow_run_url: str | None) -> str:
    """The approval's text, from the `evaluate` step's result, the gate's decision and the run's MLflow
    address (`patientinsight.tracking.LINK_XCOM_KEY` of the run's state)."""
    comparison = evaluation.get("comparison") or {"modes": {}}
    retriever = comparison.get("retriever") or evaluation.get("retriever") or "the configured retriever"
    max_mrr_drop, min_queries = decision["max_mrr_drop"], decision.get("min_queries", 0)
    against_published: list[str] = []
    against_bm25: list[str] = []
    for mode, row in comparison["modes"].items():
        for check in ("published", "vectors"):
            if check in row:
                name = "dense" if check == "vectors" else retriever  # the vectors alone, as the gate checks them
                against_published.append(_row(mode, name, row[check], max_mrr_drop, min_queries))
        # judged ("own": nothing published to compare), or measured beside the published comparison
        margin = row.get("own") or row.get("bm25")
        if margin is not None:
            against_bm25.append(_row(mode, retriever, margin, max_mrr_drop, min_queries, judged="own" in row))
    lines = [held_sentence(comparison, decision), ""]
    lines.append(
        "MRR (mean reciprocal rank), leave-one-out on holdout queries. Held only when MRR falls more than "
        f"{max_mrr_drop} below the reference and the 95% interval of the per-query difference lies below zero."
    )
    lines += ["", "**Published against new** (the same queries and candidates on both versions):", ""]
    if against_published:
        lines += _table("published", against_published)
    else:
        reason = comparison.get("vectors_not_comparable") or "there is no comparable published version"
        lines.append(f"Not compared: {reason}.")
    lines += ["", "**Margin over BM25** (the new version's own queries; BM25 is `lexical`):", ""]
    if against_bm25:
        lines += _table("BM25", against_bm25)
    else:
        lines.append("Not measured: the new version has no holdout queries.")
    lines.append("")
    if mlflow_run_url:
        lines.append(f"[Open the run in MLflow]({mlflow_run_url}): every metric, the validation and profile reports.")
    else:
        lines.append("This run has no MLflow link.")
    lines += ["", DECISION]
    return "\n".join(lines)
