"""Retrieval quality of every retriever and variant on the real records: both query modes, tune and
holdout, under the leave-one-out protocol (the query's own record is hidden from every stage of the
retriever: candidates, feedback, fusion statistics, reranking).

Everything chosen by looking at metrics is chosen on `tune`: first BM25's k1, b and title weight
(the lexical index every lexical retriever shares), then each retriever's own knobs. `holdout` is
only reported. The comparison baseline, "plain BM25", is bm25s's defaults (k1 1.5, b 0.75, title once).
The shipped hybrid_rerank dense share (`Settings.rerank_weight`) was chosen on the physician-style
descriptions (benchmarks/physician_quality.py), not by this grid; when the two differ, the shipped
share is reported too, as its own row.

Variants that the service does not ship are scored here from the same pieces (the version's lexical
index, its vectors, the reader's exclusion mask): reciprocal-rank fusion, Rocchio feedback on the
vectors, the rerank on chunk vectors (best chunk; 4.9x the embedding cost), and a prior on the query
patient's age and sex (which the service would have to be told).

    python benchmarks/retrieval_quality.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import machine, real_records, stamp

from patientinsight.embedding.encoder import make_embedder
from patientinsight.evaluation.metrics import Query, build_queries, mean_metrics, paired_interval, per_query, query_text
from patientinsight.index.embedded import EmbeddedIndex, EmbeddedReader
from patientinsight.index.lexical import PLAIN_BM25, Bm25Params, LexicalIndex, lexical_index_hook, write_index
from patientinsight.index.types import EmbeddedBatch
from patientinsight.retrieval.searcher import RETRIEVERS, RetrievalConfig, Searcher, _standardized
from patientinsight.settings import Settings

# Published PPR results on the full benchmark's test split (MRR / P@10 / nDCG@10, percent), for reference.
PUBLISHED = {
    "BM25": (22.86, 4.67, 18.29),
    "RRF (BM25 + 2 dense)": (27.76, 6.96, 24.12),
    "Sentence-BERT": (5.28, 1.17, 3.88),
}
SPLITS = ("tune", "holdout")
MODES = ("short", "full")
METRICS = ("mrr", "p@10", "ndcg@10", "recall@100")
LEXICAL_GRID = {"k1": (1.2, 1.5, 2.0, 3.0, 4.0), "b": (0.75, 0.9, 1.0), "title_weight": (0, 1, 2)}
RERANK_GRID = {"rerank_weight": (0.2, 0.3, 0.4, 0.5), "rerank_candidates": (50, 100, 200)}
# Retrievers that meet the query latency budget at 250,000 records (p50 25 ms, p99 100 ms, concurrency
# 1; benchmarks/query_latency.py, docs/PERFORMANCE.md): dense and hybrid scan every vector (p50 36 ms).
WITHIN_LATENCY_BUDGET = ("lexical", "lexical_rm3", "hybrid_rerank")
Scorer = Callable[[Query, np.ndarray | None, frozenset[str], int], list[str]]


class Bench:
    """The version, its query sets and their vectors; `run` scores one ranking function."""

    def __init__(self, reader: EmbeddedReader, embedder: Any, records: pd.DataFrame, tmp: Path) -> None:
        self.reader, self.embedder, self.tmp = reader, embedder, tmp
        self.records = records
        self.queries: dict[tuple[str, str], list[Query]] = {}
        self.vectors: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for split, mode in itertools.product(SPLITS, MODES):
            qs = [replace(q, text=query_text(q.text, mode)) for q in build_queries(records, mode="full", split=split)]
            self.queries[(split, mode)] = qs
            self.vectors[(split, mode)] = dict(
                zip([q.uid for q in qs], embedder.encode([q.text for q in qs]), strict=True)
            )
        self._lexical: dict[Bm25Params, LexicalIndex] = {}

    def lexical(self, params: Bm25Params) -> LexicalIndex:
        if params not in self._lexical:
            folder = self.tmp / f"lexical-{params.k1}-{params.b}-{params.title_weight}"
            write_index(folder, self.records["title"].tolist(), self.records["text"].tolist(), params)
            self._lexical[params] = LexicalIndex(folder)
        return self._lexical[params]

    def searcher(self, params: Bm25Params, config: RetrievalConfig, reader: EmbeddedReader | None = None) -> Searcher:
        searcher = Searcher(reader or self.reader, self.embedder, config)
        searcher.lexical = self.lexical(params)  # the cached property, set: one version, several BM25 indexes
        return searcher

    def run(self, split: str, mode: str, rank: Scorer) -> tuple[dict[str, float], list[float]]:
        queries, vectors = self.queries[(split, mode)], self.vectors[(split, mode)]
        started = time.perf_counter()
        rows = per_query(queries, lambda q, k: rank(q, vectors.get(q.uid), frozenset({q.uid}), k))
        ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
        return {**mean_metrics(rows, METRICS), "ms_per_query": ms}, [r["mrr"] for r in rows]


def product(searcher: Searcher, retriever: str) -> Scorer:
    def rank(q: Query, vector: np.ndarray | None, hidden: frozenset[str], k: int) -> list[str]:
        return [h.uid for h in searcher.search(q.text, k, None, retriever, vector, exclude=hidden)]

    return rank


def ranked(searcher: Searcher, scores: np.ndarray, k: int) -> list[str]:
    return [searcher.reader.uid_at(i) for i, _ in searcher.reader.top(scores, k)]


def rrf(searcher: Searcher, k_rrf: int, dense_weight: float) -> Scorer:
    """Reciprocal-rank fusion of BM25 and dense over the whole visible corpus."""

    def rank(q: Query, vector: np.ndarray | None, hidden: frozenset[str], k: int) -> list[str]:
        mask = searcher.reader.hidden(hidden)
        fused = np.zeros(searcher.reader.count())
        for scores, weight in (
            (searcher.lexical.scores(q.text), 1.0),
            (searcher.reader.scores(vector)[0], dense_weight),
        ):
            scores = np.where(mask, -np.inf, scores) if mask is not None else scores
            ranks = np.empty(len(scores))
            ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
            fused += weight / (k_rrf + ranks)
        return ranked(searcher, np.where(mask, -np.inf, fused) if mask is not None else fused, k)

    return rank


def rerank_variant(
    searcher: Searcher,
    chunk_reader: EmbeddedReader | None = None,
    rocchio: tuple[int, float] | None = None,
    prior: tuple[float, float] | None = None,
    ages: np.ndarray | None = None,
    sexes: np.ndarray | None = None,
) -> Scorer:
    """hybrid_rerank with one lever changed: dense scores from chunk vectors (best chunk), Rocchio
    feedback (the query vector moved towards the mean of the first pass's top documents), or a prior
    on the query patient's age (log-age distance) and sex."""
    cfg = searcher.config
    if rocchio is not None:  # the feedback reads vectors by record position: one vector per record
        assert int(searcher.reader.vectors.shape[0]) == searcher.reader.count()

    def rank(q: Query, vector: np.ndarray | None, hidden: frozenset[str], k: int) -> list[str]:
        pool, rest, lexical = searcher.rerank_pool(q.text, searcher.reader.hidden(hidden))
        assert vector is not None
        if len(pool) == 0:  # no visible record shares a term: the product ranks by dense alone
            return product(searcher, "hybrid_rerank")(q, vector, hidden, k)
        dense = (chunk_reader or searcher.reader).scores_at(vector, pool)
        fused = cfg.rerank_weight * _standardized(dense, None) + (1 - cfg.rerank_weight) * _standardized(
            lexical[pool], None
        )
        if rocchio is not None:
            top_docs, beta = rocchio
            moved = (1 - beta) * vector + beta * np.asarray(
                searcher.reader.vectors[np.sort(pool[np.argsort(-fused)[:top_docs]])]
            ).mean(0)
            moved /= np.linalg.norm(moved)
            dense = searcher.reader.scores_at(moved, pool)
            fused = cfg.rerank_weight * _standardized(dense, None) + (1 - cfg.rerank_weight) * _standardized(
                lexical[pool], None
            )
        if prior is not None and ages is not None and sexes is not None:
            sex_w, age_w = prior
            if q.sex:
                fused = fused + sex_w * (sexes[pool] == q.sex)
            if q.age_years is not None and q.age_years == q.age_years:
                known = np.nan_to_num(ages[pool], nan=q.age_years)
                fused = fused - age_w * np.abs(np.log1p(known) - np.log1p(q.age_years))
        out = np.full(searcher.reader.count(), -np.inf)
        out[pool] = fused
        if len(rest):  # below the pool, in BM25 order, as the product does
            out[rest] = fused.min() - 2.0 + lexical[rest] / lexical[rest].max()
        return ranked(searcher, out, k)

    return rank


def build_version(
    tmp: Path, name: str, records: pd.DataFrame, vectors: np.ndarray, counts: np.ndarray, embedder: Any
) -> EmbeddedReader:
    index = EmbeddedIndex(tmp / name)
    builder = index.builder(None, embedder.describe())
    builder.upsert(EmbeddedBatch(records, vectors, counts))
    version = builder.commit(staged_extras=lexical_index_hook(PLAIN_BM25))
    return index.open(version)


def tune_objective(bench: Bench, rank: Scorer, full_floor: float) -> float:
    """Tune short-query MRR; a choice that costs full summaries more than 0.005 below plain BM25 is out."""
    short, _ = bench.run("tune", "short", rank)
    full, _ = bench.run("tune", "full", rank)
    return short["mrr"] if full["mrr"] >= full_floor - 0.005 else -1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smaller grids, no chunk variant")
    args = parser.parse_args()
    records = real_records()
    settings = Settings()
    embedder = make_embedder(settings)
    started = time.perf_counter()
    vectors, counts = embedder.embed_documents(records["text"].tolist())
    embed_s = time.perf_counter() - started
    lexical_grid = dict(LEXICAL_GRID) if not args.quick else {"k1": (1.5, 3.0), "b": (0.75, 1.0), "title_weight": (1,)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reader = build_version(tmp, "truncate", records, vectors, counts, embedder)
        bench = Bench(reader, embedder, records, tmp)
        rows: list[dict[str, Any]] = []
        per_query_mrr: dict[str, dict[tuple[str, str], list[float]]] = {}

        def report(name: str, rank: Scorer, extra: dict[str, Any] | None = None) -> None:
            per_query_mrr[name] = {}
            for split, mode in itertools.product(SPLITS, MODES):
                metrics, rr = bench.run(split, mode, rank)
                per_query_mrr[name][(split, mode)] = rr
                rows.append({"retriever": name, "split": split, "queries_mode": mode, "protocol": "leave_one_out",
                             **metrics, **(extra or {})})  # fmt: skip

        plain = bench.searcher(PLAIN_BM25, RetrievalConfig())
        report("plain BM25 (k1 1.5, b 0.75)", product(plain, "lexical"))
        full_floor = next(r["mrr"] for r in rows if r["split"] == "tune" and r["queries_mode"] == "full")

        # 1. BM25's own knobs on tune (lexical alone), the best five kept for the joint rerank grid.
        lexical_scores = []
        for k1, b, tw in itertools.product(*lexical_grid.values()):
            params = Bm25Params(title_weight=tw, k1=k1, b=b)
            lexical_scores.append(
                (
                    tune_objective(bench, product(bench.searcher(params, RetrievalConfig()), "lexical"), full_floor),
                    params,
                )
            )
        lexical_scores.sort(key=lambda t: -t[0])
        # 2. hybrid_rerank jointly with the best BM25 settings, on tune.
        rerank_grid = RERANK_GRID if not args.quick else {"rerank_weight": (0.3, 0.4), "rerank_candidates": (100,)}
        trials = []
        for _, params in lexical_scores[:5]:
            for weight, pool in itertools.product(*rerank_grid.values()):
                config = RetrievalConfig(retriever="hybrid_rerank", rerank_weight=weight, rerank_candidates=pool)
                trials.append(
                    (
                        tune_objective(bench, product(bench.searcher(params, config), "hybrid_rerank"), full_floor),
                        params,
                        config,
                    )
                )
        _, lexical_params, rerank_config = max(trials, key=lambda t: t[0])
        # 3. The other retrievers' knobs on tune, on the chosen lexical index.
        hybrid_weight = max(
            (0.1, 0.2, 0.3, 0.4, 0.5),
            key=lambda w: tune_objective(
                bench, product(bench.searcher(lexical_params, RetrievalConfig(hybrid_weight=w)), "hybrid"), full_floor
            ),
        )
        rm3_weight = max(
            (0.1, 0.2, 0.3, 0.5, 0.9),
            key=lambda w: tune_objective(
                bench, product(bench.searcher(lexical_params, RetrievalConfig(rm3_weight=w)), "lexical_rm3"), full_floor
            ),
        )
        knobs = RetrievalConfig(
            hybrid_weight=hybrid_weight, rerank_weight=rerank_config.rerank_weight,
            rerank_candidates=rerank_config.rerank_candidates, rm3_weight=rm3_weight,
        )  # fmt: skip
        # 4. The default: the best retriever on tune among those within the latency budget.
        on_tune = {
            r: tune_objective(bench, product(bench.searcher(lexical_params, knobs), r), full_floor) for r in RETRIEVERS
        }
        default = max(WITHIN_LATENCY_BUDGET, key=lambda r: on_tune[r])
        tuned = replace(knobs, retriever=default)
        chosen = {"bm25": vars(lexical_params), **vars(tuned), "tune_short_mrr": on_tune}
        searcher = bench.searcher(lexical_params, tuned)
        report("lexical", product(searcher, "lexical"))  # BM25 with the tuned k1, b and title weight
        for retriever in ("dense", "lexical_rm3", "hybrid", "hybrid_rerank"):
            report(retriever, product(searcher, retriever))
        if settings.rerank_weight != tuned.rerank_weight:
            shipped = bench.searcher(lexical_params, replace(tuned, rerank_weight=settings.rerank_weight))
            report(f"hybrid_rerank, shipped dense share {settings.rerank_weight}", product(shipped, "hybrid_rerank"))
        # 5. Variants, each with its knob on tune.
        best_rrf = max(
            itertools.product((10, 60), (0.3, 0.5, 1.0)),
            key=lambda kw: tune_objective(bench, rrf(searcher, *kw), full_floor),
        )
        report(f"variant: RRF BM25+dense (k {best_rrf[0]}, dense weight {best_rrf[1]})", rrf(searcher, *best_rrf))
        best_rocchio = max(
            itertools.product((2, 3, 5), (0.3, 0.5)),
            key=lambda r: tune_objective(bench, rerank_variant(searcher, rocchio=r), full_floor),
        )
        report(
            f"variant: hybrid_rerank + Rocchio (top {best_rocchio[0]}, beta {best_rocchio[1]})",
            rerank_variant(searcher, rocchio=best_rocchio),
        )
        ages, sexes = records["age_years"].to_numpy(float), records["sex"].to_numpy(object)
        best_prior = max(
            itertools.product((0.0, 0.2), (0.0, 0.3, 1.0)),
            key=lambda p: tune_objective(bench, rerank_variant(searcher, prior=p, ages=ages, sexes=sexes), full_floor),
        )
        report(
            f"variant: hybrid_rerank + age/sex prior (sex {best_prior[0]}, age {best_prior[1]})",
            rerank_variant(searcher, prior=best_prior, ages=ages, sexes=sexes),
        )
        # What the vectors add: the same retriever with random unit vectors in their place.
        noise = np.random.default_rng(5).standard_normal(vectors.shape).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        noise_reader = build_version(tmp, "noise", records, noise, counts, embedder)
        noise_rank = product(bench.searcher(lexical_params, tuned, noise_reader), "hybrid_rerank")
        report("control: hybrid_rerank with random vectors (what the vectors add)", noise_rank)
        chunk_cost = None
        if not args.quick:
            chunk_settings = Settings(embed_strategy="chunk")
            chunk_embedder = make_embedder(chunk_settings)
            started = time.perf_counter()
            chunk_vectors, chunk_counts = chunk_embedder.embed_documents(records["text"].tolist())
            chunk_cost = (time.perf_counter() - started) / embed_s
            chunk_reader = build_version(tmp, "chunk", records, chunk_vectors, chunk_counts, chunk_embedder)
            report(
                f"variant: hybrid_rerank on chunk vectors (best chunk; {chunk_cost:.1f}x the embedding time)",
                rerank_variant(searcher, chunk_reader=chunk_reader),
            )
            report(
                "variant: dense on chunk vectors (best chunk)",
                product(bench.searcher(lexical_params, tuned, chunk_reader), "dense"),
            )
    default_rr = per_query_mrr[tuned.retriever]
    margins = {}
    for mode in MODES:
        for baseline in ("plain BM25 (k1 1.5, b 0.75)", "lexical"):
            diff = np.array(default_rr[("holdout", mode)]) - np.array(per_query_mrr[baseline][("holdout", mode)])
            low, high = paired_interval(diff)
            margins[f"{mode} vs {baseline}"] = {
                "difference": round(float(diff.mean()), 4),
                "interval_95": [round(low, 4), round(high, 4)],
            }
    if args.json:
        print(json.dumps({"tuned": chosen, "margins_holdout": margins, "rows": rows}))
        return
    print(f"# retrieval quality, {len(records)} real records, leave-one-out; {machine()}; {stamp()}")
    print(f"tuned on tune: {chosen}\n")
    print("| retriever | split | queries | mode | MRR | P@10 | nDCG@10 | R@100 | ms/query |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['retriever']} | {r['split']} | {int(r['queries'])} | {r['queries_mode']} | {r['mrr']:.4f} | "
            f"{r['p@10']:.4f} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['ms_per_query']:.2f} |"
        )
    print(f"\nthe default ({tuned.retriever}) on holdout, per-query MRR difference (95% paired bootstrap interval):")
    for name, m in margins.items():
        print(f"- {name}: {m['difference']:+.4f} ({m['interval_95'][0]:+.4f} to {m['interval_95'][1]:+.4f})")
    print("\nPublished PPR results on the full benchmark (test split, ~155k-patient corpus; a harder task):")
    for name, (mrr, p10, ndcg) in PUBLISHED.items():
        print(f"- {name}: MRR {mrr} / P@10 {p10} / nDCG@10 {ndcg} (percent)")


if __name__ == "__main__":
    main()
