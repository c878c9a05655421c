"""Patient-to-patient retrieval evaluation: standard metrics and query sets built from the
`similar_patients` annotations of the indexed records.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from patientinsight.retrieval.passages import first_sentences


def split_of(pmid: str) -> str:
    """Fixed halves by article, so patients of one report never straddle tune and holdout."""
    return "tune" if hashlib.sha256(pmid.encode()).digest()[0] % 2 == 0 else "holdout"


@dataclass(frozen=True)
class Query:
    uid: str
    text: str
    relevant: dict[str, int]  # uid -> graded relevance
    sex: str | None = None
    age_years: float | None = None


AGE_BANDS = ((0.0, 18.0, "0-17"), (18.0, 40.0, "18-39"), (40.0, 65.0, "40-64"), (65.0, 200.0, "65+"))


def age_band(age: float | None) -> str:
    if age is None or age != age:  # NaN: unknown
        return "unknown"
    return next(label for low, high, label in AGE_BANDS if low <= age < high)


def query_text(text: str, mode: str) -> str:
    """What a query of this mode says: a summary's first sentences ("short") or all of it ("full")."""
    return first_sentences(text) if mode == "short" else text


def build_queries(
    records: pd.DataFrame, mode: str = "short", split: str | None = "holdout", limit: int | None = None
) -> list[Query]:
    """Every record whose annotated similar patients are in the corpus becomes a query; with `limit`,
    the first `limit` of them (read no further: 250,000 records' links take seconds to parse)."""
    corpus = set(records["uid"])
    queries: list[Query] = []
    for row in records.itertuples(index=False):
        if limit is not None and len(queries) >= limit:
            break
        if split is not None and split_of(str(row.pmid)) != split:
            continue
        links = json.loads(row.similar_patients) if isinstance(row.similar_patients, str) else {}
        relevant = {uid: int(g) for uid, g in links.items() if uid in corpus and uid != row.uid}
        if not relevant:
            continue
        text = query_text(row.text, mode)
        sex = getattr(row, "sex", None)
        age = getattr(row, "age_years", None)
        queries.append(Query(row.uid, text, relevant, sex, None if age is None else float(age)))
    return queries


def reciprocal_rank(ranked: Sequence[str], relevant: Mapping[str, int]) -> float:
    for position, uid in enumerate(ranked, start=1):
        if relevant.get(uid, 0) > 0:
            return 1.0 / position
    return 0.0


def precision_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return sum(1 for uid in ranked[:k] if relevant.get(uid, 0) > 0) / k


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {uid for uid, g in relevant.items() if g > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG with graded gains (the judgment itself), as in the PMC-Patients evaluation."""
    dcg = sum(relevant.get(uid, 0) / math.log2(i + 2) for i, uid in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


PROTOCOL = "leave_one_out"  # how every number here is made: the query's own record is hidden from the retriever


class LeakError(AssertionError):
    """A retriever returned the query's own record: it was not hidden from every stage of retrieval."""


def per_query(
    queries: Sequence[Query], retrieve: Callable[[Query, int], list[str]], depth: int = 100
) -> list[dict[str, float]]:
    """Each query's metrics. `retrieve(query, k)` ranks with the query's own record hidden from every
    stage (candidates, feedback, fusion statistics); returning it is a leak, and raises."""
    out = []
    for query in queries:
        ranked = retrieve(query, depth)[:depth]
        if query.uid in ranked:
            raise LeakError(f"query {query.uid} retrieved its own record: exclude it before retrieval")
        out.append({
            "mrr": reciprocal_rank(ranked, query.relevant),
            "p@10": precision_at(ranked, query.relevant, 10),
            "ndcg@10": ndcg_at(ranked, query.relevant, 10),
            f"recall@{depth}": recall_at(ranked, query.relevant, depth),
        })  # fmt: skip
    return out


def mean_metrics(rows: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    n = len(rows)
    return {**{k: (sum(r[k] for r in rows) / n if n else 0.0) for k in keys}, "queries": float(n)}


def evaluate_queries(
    queries: Sequence[Query], retrieve: Callable[[Query, int], list[str]], depth: int = 100
) -> dict[str, float]:
    """Mean metrics over the queries, under the leave-one-out protocol (see `per_query`)."""
    return mean_metrics(per_query(queries, retrieve, depth), ("mrr", "p@10", "ndcg@10", f"recall@{depth}"))


def paired_interval(differences: Sequence[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """The bootstrap interval of the mean of per-query differences (percentile method, fixed seed so a
    decision can be repeated): how far the mean could move with other queries of the same kind."""
    values = np.asarray(differences, dtype=np.float64)
    if len(values) == 0:
        return (0.0, 0.0)
    if np.all(values == values[0]):  # no spread: every resample has the same mean
        return (float(values[0]), float(values[0]))
    result = stats.bootstrap(
        (values,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile", random_state=0
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def evaluate_by_group(
    queries: Sequence[Query], retrieve: Callable[[Query, int], list[str]], depth: int = 100
) -> dict[str, dict[str, float]]:
    """The same metrics per sex and per age band of the query patient, so that a retriever that
    serves one group worse shows it."""
    groups: dict[str, list[Query]] = {}
    for query in queries:
        groups.setdefault(f"sex={query.sex or 'unknown'}", []).append(query)
        groups.setdefault(f"age={age_band(query.age_years)}", []).append(query)
    return {name: evaluate_queries(members, retrieve, depth) for name, members in sorted(groups.items())}
