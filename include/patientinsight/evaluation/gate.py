"""The publish gate: did retrieval get worse for a reason other than new records?

MRR measured on two versions' own records is not comparable: new records bring other queries and more
candidates, so growth alone moves it. The gate therefore compares like with like:

- the same queries: the published version's holdout queries (its texts and judgments) whose record
  and judged records are in both versions;
- the same candidates: each version hides the records the other one lacks, and the query's own record
  (leave-one-out);
- with a tolerance from the per-query spread: a paired bootstrap of the reciprocal-rank
  differences. A version is held only when its MRR falls more than `max_mrr_drop` below the
  reference and the bootstrap interval of the difference lies wholly below zero.

Per query mode, the configured retriever is compared with the published version, and so are the
vectors alone (dense retrieval), since the default's small dense share would hide broken vectors.
Where the published version cannot be compared (there is none yet, it was embedded with another
model, or it has no lexical index), the configured retriever is held against BM25 on the new version
itself instead. With fewer than `min_queries` queries a comparison is not judged, and the reason
says so. Only BM25's document frequencies still count the records a version hides.

Queries: the first `eval_max_queries` of each list; where the new version changes at most 1% of the
published version's records (a small upload into a large index), the first `gate_small_change_queries`,
so that the gate's cost follows the change rather than the corpus. The report says which cap it used and
how many records changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.identity import same_embedding
from patientinsight.evaluation.metrics import PROTOCOL, Query, build_queries, paired_interval, per_query
from patientinsight.evaluation.report import links_of, query_vectors, ranker, with_texts
from patientinsight.index.lexical import has_lexical
from patientinsight.index.types import IndexReader
from patientinsight.retrieval.searcher import DENSE_RETRIEVERS, Searcher
from patientinsight.settings import Settings

MODES = ("short", "full")
BASELINE = "lexical"
SMALL_CHANGE = 0.01  # a change of at most this share of the published records is judged on fewer queries


def _reciprocal_rank(
    searcher: Searcher, query: Query, retriever: str, hidden: frozenset[str], vectors: dict[str, np.ndarray]
) -> float:
    return float(per_query([query], ranker(searcher, retriever, vectors, hidden))[0]["mrr"])


def query_cap(new: IndexReader, published: IndexReader | None, settings: Settings) -> tuple[int | None, int | None]:
    """The most queries per mode, and how many records the new version changes against the published one
    (None without one): `gate_small_change_queries` where that is at most SMALL_CHANGE of the published
    records, else `eval_max_queries`."""
    cap = settings.eval_max_queries or None
    if published is None:
        return cap, None
    old, now = published.hashes(), new.hashes()
    changed = sum(1 for uid, digest in now.items() if old.get(uid) != digest) + len(old.keys() - now.keys())
    small = settings.gate_small_change_queries
    if small and changed <= SMALL_CHANGE * len(old):
        cap = min(cap, small) if cap else small
    return cap, changed


def _paired(new: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    # Six decimals: the decision reads these, and a rounded -0.00004 must stay below zero.
    low, high = paired_interval(new - reference)
    return {
        "mrr": round(float(new.mean()), 6),
        "reference_mrr": round(float(reference.mean()), 6),
        "difference": round(float((new - reference).mean()), 6),
        "interval_95": [round(low, 6), round(high, 6)],
    }


def _has_lexical(reader: IndexReader) -> bool:
    return has_lexical(reader.path)  # versions made before the lexical index existed lack it


CHECKS = {  # what each comparison holds the new version against, in the report's words
    "published": "the published version",
    "vectors": "the published version's vectors (dense retrieval)",
    "own": "BM25 on the same version",
}


def compare(new: IndexReader, published: IndexReader | None, embedder: Embedder, settings: Settings) -> dict[str, Any]:
    """The comparisons, per query mode: the configured retriever against the published version on
    their shared queries and candidates; the vectors alone (dense retrieval) the same way, since the
    default's small dense share would hide broken vectors; and, only where the published version
    cannot be compared (none yet, or embedded otherwise), the configured retriever against BM25 on
    the new version's own queries."""

    retriever = settings.retriever
    new_searcher = Searcher.for_settings(new, embedder, settings)
    new_links = links_of(new)
    new_uids = set(new_links["uid"])
    cap, changed = query_cap(new, published, settings)
    same_vectors = published is not None and same_embedding(published.manifest, embedder.describe())
    checks: list[tuple[str, str]] = []  # (check, the retriever it runs)
    lexical_in_both = published is not None and _has_lexical(published) and _has_lexical(new)
    if lexical_in_both and (same_vectors or retriever not in DENSE_RETRIEVERS):
        checks.append(("published", retriever))
    if same_vectors and retriever != "dense":
        checks.append(("vectors", "dense"))
    shared_queries: dict[str, list[Query]] = {}
    if published is not None and checks:
        old_links = links_of(published)
        shared = new_uids & set(old_links["uid"])
        old_searcher = Searcher.for_settings(published, embedder, settings)
        only_new, only_old = frozenset(new_uids - shared), frozenset(set(old_links["uid"]) - shared)
        candidates = build_queries(old_links[old_links["uid"].isin(shared)], split="holdout", limit=cap)
        for mode in MODES:  # the published version's texts, asked of both versions alike
            shared_queries[mode] = with_texts(published, candidates, mode)
    out: dict[str, Any] = {"retriever": retriever, "protocol": PROTOCOL, "modes": {}, "max_queries": cap}
    if changed is not None:
        out["changed_records"] = changed
    for mode in MODES:
        row: dict[str, Any] = {}
        queries = shared_queries.get(mode, [])
        # Against BM25 on the new version's own queries: judged only where the published version cannot
        # be compared ("own"); otherwise measured for the approver to read ("bm25", not judged).
        own = with_texts(new, build_queries(new_links, mode=mode, split="holdout", limit=cap), mode)
        vectors = query_vectors(embedder, own, retriever)
        # One encoding of the shared queries serves both versions and both checks (the same texts).
        needs_vectors = queries and any(name in DENSE_RETRIEVERS for _, name in checks)
        shared_vectors = query_vectors(embedder, queries, "dense") if needs_vectors else {}
        ranks: dict[str, list[float]] = {
            key: [] for key in ("own", "base", *[f"{c}:{v}" for c, _ in checks for v in ("new", "old")])
        }
        # Query by query, every search of a query in turn: a version's LexicalIndex keeps the last query's
        # BM25 scores, so BM25 runs once per query and version, not once per retriever (hybrid_rerank and
        # BM25 on the own queries, the published check on the same text).
        for i in range(max(len(own), len(queries))):
            if i < len(own):
                ranks["own"].append(_reciprocal_rank(new_searcher, own[i], retriever, frozenset(), vectors))
                ranks["base"].append(_reciprocal_rank(new_searcher, own[i], BASELINE, frozenset(), vectors))
            for check, name in checks if i < len(queries) else []:
                # Each version hides what the other lacks: both rank the same candidates.
                ranks[f"{check}:new"].append(_reciprocal_rank(new_searcher, queries[i], name, only_new, shared_vectors))
                ranks[f"{check}:old"].append(_reciprocal_rank(old_searcher, queries[i], name, only_old, shared_vectors))
        judged_here = not any(check == "published" for check, _ in checks)
        row[("own" if judged_here else "bm25")] = (
            {"queries": len(own), **_paired(np.array(ranks["own"]), np.array(ranks["base"]))} if own else {"queries": 0}
        )
        for check, _ in checks if queries else []:
            on_new, on_old = np.array(ranks[f"{check}:new"]), np.array(ranks[f"{check}:old"])
            row[check] = {"queries": len(queries), **_paired(on_new, on_old)}
        out["modes"][mode] = row
    if published is not None and not same_vectors:
        out["vectors_not_comparable"] = "the published version was embedded with another model or strategy"
    return out


def decide(comparison: dict[str, Any], max_mrr_drop: float, min_queries: int) -> dict[str, Any]:
    """Hold (needs approval) when, in some query mode, the new version does materially and
    significantly worse than a reference; publish otherwise, with the reason in one sentence."""
    held: list[str] = []
    judged: list[str] = []
    skipped: list[str] = []
    for mode, row in comparison["modes"].items():
        for reference, name in CHECKS.items():
            result = row.get(reference)
            if result is None:
                continue
            label = f"{mode} queries against {name}"
            if result["queries"] < min_queries:
                skipped.append(f"{label} ({result['queries']} queries, fewer than {min_queries})")
                continue
            judged.append(label)
            if result["difference"] < -max_mrr_drop and result["interval_95"][1] < 0:
                held.append(
                    f"MRR fell by {-result['difference']:.4f} on {result['queries']} {label} "
                    f"({result['mrr']:.4f} against {result['reference_mrr']:.4f}, 95% interval of the "
                    f"difference {result['interval_95'][0]:+.4f} to {result['interval_95'][1]:+.4f})"
                )
    if held:
        reason = "; ".join(held) + f" (allowed {max_mrr_drop})"
    elif judged:
        reason = f"no material drop (allowed {max_mrr_drop}) on " + ", ".join(judged)
    else:
        reason = "gate skipped: too few queries to judge"
    if skipped and not held:
        reason += "; not judged: " + ", ".join(skipped)
    return {
        "needs_approval": bool(held),
        "skipped": not judged,
        "reason": reason,
        "max_mrr_drop": max_mrr_drop,
        "min_queries": min_queries,
    }


def flat_metrics(comparison: dict[str, Any]) -> dict[str, float]:
    """The comparison as flat numbers for MLflow and the run report."""
    out: dict[str, float] = {}
    for mode, row in comparison["modes"].items():
        for reference, result in row.items():
            out[f"{reference}_{mode}_queries"] = float(result["queries"])
            if result["queries"]:
                out[f"{reference}_{mode}_mrr"] = result["mrr"]
                out[f"{reference}_{mode}_reference_mrr"] = result["reference_mrr"]
                out[f"{reference}_{mode}_difference"] = result["difference"]
    for key in ("max_queries", "changed_records"):  # the query budget, and the change that chose it
        if comparison.get(key) is not None:
            out[key] = float(comparison[key])
    return out
