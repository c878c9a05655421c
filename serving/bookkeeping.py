"""What an answered /v1 request leaves behind, the same for a query and a follow-up: its metrics, one log
line and one audit row. None of them holds the text: its length and a prefix of its hash only."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from serving.metrics import Metrics
from serving.state import ServiceState

log = logging.getLogger("serving.query")


def text_fingerprint(text: str) -> str:
    """What logs and audit records may hold of a query: a short hash, never the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def record_answer(
    state: ServiceState,
    route: str,
    key_id: str,
    text: str,
    k: int,
    index_version: str | None,
    analysis: dict[str, Any],
    timings_ms: dict[str, float],
    uids: list[str],
) -> None:
    """`route` begins the log line ("query", "followup"). `k` is what the caller asked for: a query's k, or
    the number of distinct cases a follow-up asks about; `uids` are the cases answered, in order."""
    observe(state.metrics, analysis, timings_ms)
    fingerprint = text_fingerprint(text)
    log.info(
        "%s key=%s len=%d sha=%s k=%d cases=%d version=%s generator=%s error=%s ms=%.1f",
        route, key_id, len(text), fingerprint, k, len(uids), index_version,
        analysis["generator"], bool(analysis["error"]), timings_ms["total"],
    )  # fmt: skip
    state.audit.record(key_id, index_version, k, len(text), fingerprint, uids, analysis["generator"], analysis["error"])


def observe(metrics: Metrics, analysis: dict[str, Any], timings_ms: dict[str, float]) -> None:
    if "search" in timings_ms:  # a follow-up searches nothing: its cases are named
        metrics.retrieval.observe(timings_ms["search"] / 1000)
    if "generate" in timings_ms:  # a query may ask for no analysis
        outcome = "error" if analysis["error"] else "ok"
        metrics.generation.labels(analysis["generator"], outcome).observe(timings_ms["generate"] / 1000)
    for kind, count in (analysis["usage"] or {}).items():
        metrics.tokens.labels(analysis["generator"], kind.removesuffix("_tokens")).inc(count)
