"""Patient-to-patient retrieval evaluation: standard metrics and query sets built from the
`similar_patients` annotations of the indexed records."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a summary (a full stop, ! or ? followed by a capital, digit or bracket)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def first_sentences(text: str, n: int = 2) -> str:
    """The opening of a summary, the way a clinician would describe the patient."""
    return " ".join(_SENTENCE_END.split(text.strip(), maxsplit=n)[:n])


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


def build_queries(records: pd.DataFrame, mode: str = "short", split: str | None = "holdout") -> list[Query]:
    """Every record whose annotated similar patients are in the corpus becomes a query."""
    corpus = set(records["uid"])
    queries = []
    for row in records.itertuples(index=False):
        links = json.loads(row.similar_patients) if isinstance(row.similar_patients, str) else {}
        relevant = {uid: int(g) for uid, g in links.items() if uid in corpus and uid != row.uid}
        if not relevant or (split is not None and split_of(str(row.pmid)) != split):
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


def evaluate(
    queries: Sequence[Query], retrieve: Callable[[Query, int], list[str]], depth: int = 100
) -> dict[str, float]:
    """Mean metrics over the queries; `retrieve` returns ranked uids, and the query's own record is
    dropped from them before scoring."""
    totals = {"mrr": 0.0, "p@10": 0.0, "ndcg@10": 0.0, f"recall@{depth}": 0.0}
    for query in queries:
        ranked = [uid for uid in retrieve(query, depth + 1) if uid != query.uid][:depth]
        totals["mrr"] += reciprocal_rank(ranked, query.relevant)
        totals["p@10"] += precision_at(ranked, query.relevant, 10)
        totals["ndcg@10"] += ndcg_at(ranked, query.relevant, 10)
        totals[f"recall@{depth}"] += recall_at(ranked, query.relevant, depth)
    n = len(queries)
    return {**{k: (v / n if n else 0.0) for k, v in totals.items()}, "queries": float(n)}


def evaluate_by_group(
    queries: Sequence[Query], retrieve: Callable[[Query, int], list[str]], depth: int = 100
) -> dict[str, dict[str, float]]:
    """The same metrics per sex and per age band of the query patient, so that a retriever that
    serves one group worse shows it."""
    groups: dict[str, list[Query]] = {}
    for query in queries:
        groups.setdefault(f"sex={query.sex or 'unknown'}", []).append(query)
        groups.setdefault(f"age={age_band(query.age_years)}", []).append(query)
    return {name: evaluate(members, retrieve, depth) for name, members in sorted(groups.items())}
