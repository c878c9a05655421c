"""Retrieval quality on physician-style case descriptions (benchmarks/physician_queries/): every shipped
retriever, with the shipped settings, on the `tune` and `holdout` description sets.

Each description was written by hand for one case of the real records, in a clinician's words (age,
sex, presentation, key findings, no diagnosis named); its judgments are that case's in-sample
`similar_patients` links plus the other cases judged relevant by reading them (see the folder's README).
Two views: all judgments, and "other articles" (only the judged cases from other reports than the
source case's: no shared title or authors, the harder and more realistic part).

Protocol: leave-one-out. The case a description was written about is hidden from every stage of the
retriever (the search API's `exclude`, as in benchmarks/retrieval_quality.py), and
`evaluation.metrics.per_query` raises if a ranking holds it. `tune` is the set that ranking changes may
be chosen on; `holdout` is only reported. With `--levers`, the levers of benchmarks/physician_levers.py
are scored on tune against the product, the best one by a rule fixed in advance (`choose`) is then
scored once on holdout, with the corpus queries of retrieval_quality.py (short, full) beside them.

    python benchmarks/physician_quality.py [--json] [--levers] [--corpus] [--queries benchmarks/physician_queries]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import machine, real_records, stamp
from physician_levers import Lever, levers
from retrieval_quality import rerank_variant

from patientinsight.embedding.encoder import Embedder, make_embedder
from patientinsight.evaluation.beir import load_queries
from patientinsight.evaluation.metrics import Query, build_queries, mean_metrics, paired_interval, per_query, query_text
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.lexical import bm25_params, lexical_index_hook
from patientinsight.index.types import EmbeddedBatch
from patientinsight.retrieval.searcher import RETRIEVERS, Searcher
from patientinsight.settings import Settings

QUERIES_DIR = Path("benchmarks/physician_queries")  # relative to the repository root, like _common.DATA_DIR
SPLITS = ("tune", "holdout")
METRICS = ("mrr", "ndcg@10", "p@10", "recall@100")
PRIORS = ((0.0, 0.0), (0.2, 0.0), (0.0, 0.3), (0.2, 0.3), (0.2, 0.5))  # (sex, age) weights, as retrieval_quality's
TOLERANCE = 0.005  # retrieval_quality.py's: how far below the product a choice may fall on another query set
Ranker = Callable[[Query, np.ndarray | None, frozenset[str], int], list[str]]


def physician_queries(folder: Path, split: str) -> list[Query]:
    """The split's descriptions, each as a query of its source case: `Query.uid` is the case the
    description was written about, so that leave-one-out hides it and `per_query` checks for it."""
    sources = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                sources[str(row["_id"])] = str(row["source_uid"])
    return [replace(q, uid=sources[q.uid]) for q in load_queries(folder, split)]


def other_articles(queries: list[Query], records: pd.DataFrame) -> list[Query]:
    """The queries with only their judged cases from other articles than the source case's; those
    with none are left out."""
    article = dict(zip(records["uid"], records["pmid"].astype(str), strict=True))
    out = []
    for q in queries:
        relevant = {uid: g for uid, g in q.relevant.items() if article[uid] != article[q.uid]}
        if relevant:
            out.append(replace(q, relevant=relevant))
    return out


def check_corpus(queries: list[Query], records: pd.DataFrame) -> None:
    """Every source case and every judged case must be in the corpus, or the numbers mean nothing."""
    named = {q.uid for q in queries} | {uid for q in queries for uid in q.relevant}
    missing = sorted(named - set(records["uid"]))
    if missing:
        raise SystemExit(f"{len(missing)} judged or source cases are not in the corpus, e.g. {missing[:3]}")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def longest_shared_run(description: str, source: str) -> int:
    """The longest run of words the description shares with its source case's text: a paraphrase
    shares phrases ("a 61-year-old man"), a copied passage shares sentences."""
    mine, theirs = _words(description), _words(source)
    n = 0
    while True:
        grams = {tuple(theirs[i : i + n + 1]) for i in range(len(theirs) - n)}
        if not any(tuple(mine[i : i + n + 1]) in grams for i in range(len(mine) - n)):
            return n
        n += 1


def shipped_searcher(records: pd.DataFrame, embedder: Embedder, settings: Settings, tmp: Path) -> Searcher:
    """A version built as the pipeline builds it (its vectors, its BM25 index with the settings' k1, b
    and title weight), searched as the service searches it."""
    vectors, counts = embedder.embed_documents(records["text"].tolist())
    index = EmbeddedIndex(tmp / "index")
    builder = index.builder(None, embedder.describe())
    builder.upsert(EmbeddedBatch(records, vectors, counts))
    version = builder.commit(staged_extras=lexical_index_hook(bm25_params(settings)))
    return Searcher.for_settings(index.open(version), embedder, settings)


def product(searcher: Searcher, retriever: str) -> Ranker:
    def rank(q: Query, vector: np.ndarray | None, hidden: frozenset[str], k: int) -> list[str]:
        return [h.uid for h in searcher.search(q.text, k, None, retriever, vector, exclude=hidden)]

    return rank


class QuerySets:
    """Named query sets, each query's vector encoded once from the text as written."""

    def __init__(self, searcher: Searcher, sets: dict[str, list[Query]]) -> None:
        self.searcher, self.sets = searcher, sets
        texts = sorted({q.text for qs in sets.values() for q in qs})
        self.vectors = dict(zip(texts, searcher.embedder.encode(texts), strict=True))

    def run(self, name: str, rank: Ranker, rewrite: Callable[[Query], Query] = lambda q: q) -> list[dict[str, float]]:
        """Per-query metrics: the source case hidden (`exclude`) before the retriever runs; `rewrite`
        changes what the retriever reads, never the judgments or the vector."""
        vectors = {q.uid: self.vectors[q.text] for q in self.sets[name]}
        return per_query(self.sets[name], lambda q, k: rank(rewrite(q), vectors[q.uid], frozenset({q.uid}), k))


def row_of(per: list[dict[str, float]], queries: list[Query], **labels: Any) -> dict[str, Any]:
    low, high = paired_interval([r["mrr"] for r in per])
    return {**labels, "protocol": "leave_one_out", "judged": sum(len(q.relevant) for q in queries),
            **mean_metrics(per, METRICS), "mrr_interval_95": [round(low, 4), round(high, 4)]}  # fmt: skip


def difference(new: list[dict[str, float]], old: list[dict[str, float]], key: str) -> dict[str, Any]:
    diff = [a[key] - b[key] for a, b in zip(new, old, strict=True)]
    low, high = paired_interval(diff)
    return {"difference": round(float(np.mean(diff)), 4), "interval_95": [round(low, 4), round(high, 4)],
            "better": sum(d > 0 for d in diff), "worse": sum(d < 0 for d in diff)}  # fmt: skip


def choose(on_tune: dict[str, dict[str, dict[str, float]]], baseline: str) -> str:
    """The rule, fixed before holdout is read: the best tune physician nDCG@10, among levers whose tune
    physician MRR is not below the product's and whose corpus short and full MRR on tune are within
    TOLERANCE of it."""
    base = on_tune[baseline]

    def allowed(m: dict[str, dict[str, float]]) -> bool:
        return m["physician"]["mrr"] >= base["physician"]["mrr"] and all(
            m[s]["mrr"] >= base[s]["mrr"] - TOLERANCE for s in ("short", "full")
        )

    return max((n for n, m in on_tune.items() if allowed(m)), key=lambda n: on_tune[n]["physician"]["ndcg@10"])


def corpus_sets(split: str, records: pd.DataFrame) -> dict[str, list[Query]]:
    """retrieval_quality.py's corpus queries of the split: short and full."""
    full = build_queries(records, mode="full", split=split)
    return {"short": [replace(q, text=query_text(q.text, "short")) for q in full], "full": full}


def lever_sets(split: str, physician: list[Query], records: pd.DataFrame) -> dict[str, list[Query]]:
    return {
        "physician": physician, "physician, other articles": other_articles(physician, records),
        **corpus_sets(split, records),
    }  # fmt: skip


def try_levers(searcher: Searcher, records: pd.DataFrame, physician: dict[str, list[Query]]) -> dict[str, Any]:
    """Every lever on tune; the chosen one against the product on holdout, every query set."""
    frame = searcher.reader.frame(["age_years", "sex"])
    ages, sexes = frame["age_years"].to_numpy(float), frame["sex"].to_numpy(object)
    tried = levers(records, PRIORS, searcher.config.rerank_weight)
    baseline = tried[0]  # "as written", no prior: the product's hybrid_rerank
    assert baseline.prior == (0.0, 0.0)

    def score(sets: QuerySets, lever: Lever) -> dict[str, list[dict[str, float]]]:
        fused = searcher
        if lever.dense_share is not None:
            fused = replace(searcher, config=replace(searcher.config, rerank_weight=lever.dense_share))
        rank = rerank_variant(fused, prior=lever.prior, ages=ages, sexes=sexes)
        return {name: sets.run(name, rank, lever.rewrite) for name in sets.sets}

    tune = QuerySets(searcher, lever_sets("tune", physician["tune"], records))
    per_tune = {lever.name: score(tune, lever) for lever in tried}
    on_tune = {n: {s: mean_metrics(per, METRICS) for s, per in sets.items()} for n, sets in per_tune.items()}
    chosen = choose(on_tune, baseline.name)
    holdout = QuerySets(searcher, lever_sets("holdout", physician["holdout"], records))
    baseline_holdout = score(holdout, baseline)  # the product, scored the same way as on tune
    per_holdout = score(holdout, next(lever for lever in tried if lever.name == chosen))
    compared = {
        split: {
            s: {key: difference(per[s], base[s], key) for key in ("mrr", "ndcg@10")}
            for s in per
        }
        for split, per, base in (
            ("tune", per_tune[chosen], per_tune[baseline.name]), ("holdout", per_holdout, baseline_holdout)
        )
    }  # fmt: skip
    helps = compared["tune"]["physician"]["ndcg@10"]["difference"] > 0
    holds = all(d["difference"] >= -TOLERANCE for sets in compared["holdout"].values() for d in sets.values())
    return {"on_tune": on_tune, "chosen": chosen, "compared": compared, "ship": chosen != baseline.name and helps
            and holds, "holds_holdout": holds}  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| retriever | set | judgments | descriptions | judged | MRR (95% interval) | nDCG@10 | P@10 | R@100 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        low, high = r["mrr_interval_95"]
        print(
            f"| {r['retriever']} | {r['split']} | {r['view']} | {int(r['queries'])} | {r['judged']} | "
            f"{r['mrr']:.4f} ({low:.2f}-{high:.2f}) | {r['ndcg@10']:.4f} | {r['p@10']:.4f} | {r['recall@100']:.4f} |"
        )


def print_levers(result: dict[str, Any]) -> None:
    sets = list(next(iter(result["on_tune"].values())))
    print("\n| lever (hybrid_rerank, tune) | " + " | ".join(f"{s} MRR / nDCG@10" for s in sets) + " |")
    print("|---|" + "---:|" * len(sets))
    for name, metrics in result["on_tune"].items():
        cells = " | ".join(f"{metrics[s]['mrr']:.4f} / {metrics[s]['ndcg@10']:.4f}" for s in sets)
        print(f"| {name} | {cells} |")
    print(f"\nchosen on tune: {result['chosen']}; against the product (paired, 95% bootstrap interval):")
    for split, by_set in result["compared"].items():
        for s, by_key in by_set.items():
            cells = "; ".join(
                f"{k} {d['difference']:+.4f} ({d['interval_95'][0]:+.4f} to {d['interval_95'][1]:+.4f}, "
                f"{d['better']} better, {d['worse']} worse)"
                for k, d in by_key.items()
            )
            print(f"- {split}, {s}: {cells}")
    print(f"holds holdout (no set more than {TOLERANCE} below): {result['holds_holdout']}; shipped: {result['ship']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--levers", action="store_true", help="also try the levers of physician_levers.py")
    parser.add_argument("--queries", type=Path, default=QUERIES_DIR, help="a BEIR folder of physician descriptions")
    parser.add_argument("--corpus", action="store_true", help="also the corpus short and full queries, as rows")
    args = parser.parse_args()
    records = real_records()
    settings = Settings()
    physician = {split: physician_queries(args.queries, split) for split in SPLITS}
    for queries in physician.values():
        check_corpus(queries, records)
    texts = dict(zip(records["uid"], records["text"], strict=True))
    copied = max(longest_shared_run(q.text, texts[q.uid]) for qs in physician.values() for q in qs)
    rows: list[dict[str, Any]] = []
    lever_result = None
    with tempfile.TemporaryDirectory() as tmp:
        searcher = shipped_searcher(records, make_embedder(settings), settings, Path(tmp))
        views: dict[tuple[str, str], list[Query]] = {}
        for split in SPLITS:
            views[(split, "all")] = physician[split]
            views[(split, "other articles")] = other_articles(physician[split], records)
            if args.corpus:  # beside them, with the same settings
                for mode, queries in corpus_sets(split, records).items():
                    views[(split, f"corpus {mode}")] = queries
        sets = QuerySets(searcher, {f"{split}, {view}": qs for (split, view), qs in views.items()})
        for ((split, view), queries), retriever in itertools.product(views.items(), RETRIEVERS):
            started = time.perf_counter()
            per = sets.run(f"{split}, {view}", product(searcher, retriever))
            ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
            rows.append(row_of(per, queries, retriever=retriever, split=split, view=view, ms_per_query=ms))
        if args.levers:
            lever_result = try_levers(searcher, records, physician)
    shipped = {"retriever": settings.retriever, "bm25": vars(bm25_params(settings)),
               "rerank_weight": settings.rerank_weight, "rerank_candidates": settings.rerank_candidates,
               "hybrid_weight": settings.hybrid_weight, "rm3_weight": settings.rm3_weight}  # fmt: skip
    if args.json:
        print(json.dumps({"machine": machine(), "date": stamp(), "settings": shipped, "longest_shared_run": copied,
                          "rows": rows, "levers": lever_result}))  # fmt: skip
        return
    print(f"# physician-style descriptions, {len(records)} real records, leave-one-out; {machine()}; {stamp()}")
    print(f"shipped settings: {shipped}")
    print(f"longest run of words any description shares with its source case: {copied}\n")
    print_table(rows)
    if lever_result is not None:
        print_levers(lever_result)


if __name__ == "__main__":
    main()
