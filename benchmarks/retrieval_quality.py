"""Retrieval quality of every retriever on the real records, both query modes, tune and holdout.

Settings that are chosen by looking at metrics (hybrid weight, RM3 weight, title weight) are chosen
on `tune`; the table that compares retrievers is `holdout`.

    python benchmarks/retrieval_quality.py [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, real_records, stamp

from patientinsight.evaluation import build_queries, evaluate
from patientinsight.index import EmbeddedBatch, EmbeddedIndex
from patientinsight.lexical import write_index
from patientinsight.pipeline import make_embedder
from patientinsight.retrievers import RETRIEVERS, Searcher
from patientinsight.settings import Settings

# Published PPR results on the full benchmark's test split (MRR / P@10 / nDCG@10, percent), for reference.
PUBLISHED = {
    "BM25": (22.86, 4.67, 18.29),
    "RRF (BM25 + 2 dense)": (27.76, 6.96, 24.12),
    "Sentence-BERT": (5.28, 1.17, 3.88),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    records = real_records()
    embedder = make_embedder(Settings())
    vectors, counts = embedder.embed_documents(records["text"].tolist())
    with tempfile.TemporaryDirectory() as tmp:
        index = EmbeddedIndex(Path(tmp))
        builder = index.builder(None, embedder.describe())
        builder.upsert(EmbeddedBatch(records, vectors, counts))
        version = builder.commit(extras=lambda f, r: write_index(f, r["title"].tolist(), r["text"].tolist(), 1))
        searcher = Searcher(index.open(version), embedder)
        queries = {
            (split, mode): build_queries(records, mode=mode, split=split)
            for split in ("tune", "holdout")
            for mode in ("short", "full")
        }
        query_vectors = {
            key: dict(zip([q.uid for q in qs], embedder.encode([q.text for q in qs]), strict=True))
            for key, qs in queries.items()
        }

        def measure(retriever: str, split: str, mode: str) -> dict[str, float]:
            vecs = query_vectors[(split, mode)]
            started = time.perf_counter()
            metrics = evaluate(
                queries[(split, mode)],
                lambda q, k: [h.uid for h in searcher.search(q.text, k, None, retriever, vecs[q.uid])],
            )
            metrics["ms_per_query"] = 1000 * (time.perf_counter() - started) / max(1, len(queries[(split, mode)]))
            return metrics

        # Tune: each knob on the tune half, mean MRR of the two query modes.
        tuned: dict[str, float] = {}
        for knob, values, retriever in (
            ("hybrid_weight", [0.1, 0.2, 0.3, 0.4, 0.5, 0.7], "hybrid"),
            ("rm3_weight", [0.1, 0.2, 0.3, 0.5, 0.7, 0.9], "lexical_rm3"),
        ):
            best = max(
                values,
                key=lambda v, knob=knob, retriever=retriever: (
                    setattr(searcher, knob, v),
                    np.mean([measure(retriever, "tune", m)["mrr"] for m in ("short", "full")]),
                )[1],
            )
            setattr(searcher, knob, best)
            tuned[knob] = best
        rows = [
            {"retriever": r, "queries_mode": m, "split": s, **measure(r, s, m)}
            for r in RETRIEVERS
            for s in ("tune", "holdout")
            for m in ("short", "full")
        ]
    if args.json:
        print(json.dumps({"tuned": tuned, "rows": rows}))
        return
    print(f"# retrieval quality, {len(records)} real records; {machine()}; {stamp()}")
    print(f"tuned on tune: {tuned}\n")
    print("| retriever | split | queries | mode | MRR | P@10 | nDCG@10 | R@100 | ms/query |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['retriever']} | {r['split']} | {int(r['queries'])} | {r['queries_mode']} | {r['mrr']:.4f} | "
            f"{r['p@10']:.4f} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['ms_per_query']:.2f} |"
        )
    print("\nPublished PPR results on the full benchmark (test split, ~155k-patient corpus; a harder task):")
    for name, (mrr, p10, ndcg) in PUBLISHED.items():
        print(f"- {name}: MRR {mrr} / P@10 {p10} / nDCG@10 {ndcg} (percent)")


if __name__ == "__main__":
    main()
