"""Truncation or chunking? Retrieval quality and cost of each embedding strategy on the real records.

Prints a table: per strategy, the vectors made, embedding time, and patient-to-patient metrics with
short (first two sentences) and full queries, on the tune and holdout halves. The query is always one
vector (the model reads its first 256 tokens), exactly as the service encodes a query; a case scores
as its best chunk.

    python benchmarks/embedding_strategy.py [--limit N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, real_records, stamp

from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.model import PACKAGED_MODEL
from patientinsight.evaluation.metrics import build_queries, evaluate_queries
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.types import EmbeddedBatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    records = real_records()
    if args.limit:
        records = records.head(args.limit)
    print(f"# embedding strategy, {len(records)} real records; {machine()}; {stamp()}\n")
    strategies = {
        "truncate (first 256 tokens)": Embedder(PACKAGED_MODEL, strategy="truncate"),
        "chunk 200/50 (best chunk)": Embedder(PACKAGED_MODEL, strategy="chunk", chunk_tokens=200, chunk_overlap=50),
        "chunk 128/32 (best chunk)": Embedder(PACKAGED_MODEL, strategy="chunk", chunk_tokens=128, chunk_overlap=32),
    }
    header = "| strategy | vectors | embed s | docs/s | split | queries | mode | MRR | P@10 | nDCG@10 | R@100 |"
    print(header)
    print("|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|")
    for name, embedder in strategies.items():
        embedder.encode(["warm up"])
        started = time.perf_counter()
        vectors, counts = embedder.embed_documents(records["text"].tolist())
        seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            index = EmbeddedIndex(Path(tmp))
            builder = index.builder(None, embedder.describe())
            builder.upsert(EmbeddedBatch(records, vectors, counts))
            reader = index.open(builder.commit())
            for split in ("tune", "holdout"):
                for mode in ("short", "full"):
                    queries = build_queries(records, mode=mode, split=split)
                    qv = embedder.encode([q.text for q in queries])
                    by_uid = {q.uid: v for q, v in zip(queries, qv, strict=True)}
                    m = evaluate_queries(
                        queries,
                        lambda q, k, by_uid=by_uid, reader=reader: [h.uid for h in reader.search(by_uid[q.uid], k)],
                    )
                    print(
                        f"| {name} | {len(vectors)} | {seconds:.1f} | {len(records) / seconds:.1f} | {split} | "
                        f"{len(queries)} | {mode} | {m['mrr']:.4f} | {m['p@10']:.4f} | {m['ndcg@10']:.4f} | "
                        f"{m['recall@100']:.4f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
