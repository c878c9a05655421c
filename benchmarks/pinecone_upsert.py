"""Upsert throughput of the Pinecone index over batch size and concurrency, against the Pinecone
stand-in (tests/pinecone_standin.py), through the official SDK and the same commit the pipeline runs.

    PYTHONPATH=. python benchmarks/pinecone_upsert.py [--vectors N] [--dim D] [--latency-ms 0,50]

The stand-in answers on this machine, so the numbers are the client's cost (building, encoding and
sending batches) plus the added latency per request, which stands for the network and Pinecone's
own time (an assumption, not a measurement of Pinecone). The stand-in rejects a request over 2 MB,
as Pinecone does, so batch sizes that are too large for the dimension show up as failures.

Prints a Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import machine, stamp

from patientinsight.index.pinecone import PineconeIndex
from patientinsight.index.pinecone_support import PineconeIndexError
from patientinsight.index.types import EmbeddedBatch
from tests.pinecone_standin import PineconeStandIn, standin_options


def synthetic(n: int, dim: int) -> EmbeddedBatch:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    uids = [f"{i}-1" for i in range(n)]
    records = pd.DataFrame({
        "uid": uids, "pmid": ["1"] * n, "title": ["t"] * n, "text": ["x"] * n,
        "age_years": rng.uniform(0, 90, n).round(1), "sex": rng.choice(["F", "M"], n), "pub_date": [None] * n,
        "similar_patients": ["{}"] * n, "relevant_articles": ["{}"] * n, "content_hash": [f"h{i}" for i in range(n)],
    })  # fmt: skip
    return EmbeddedBatch(records, vectors, np.ones(n, dtype=np.int64))


def run(batch: EmbeddedBatch, dim: int, latency_s: float, batch_size: int, concurrency: int) -> str:
    with PineconeStandIn(latency_s=latency_s) as standin, tempfile.TemporaryDirectory() as tmp:
        options = standin_options(
            standin.url,
            standin.api_key,
            batch_size=batch_size,
            concurrency=concurrency,
            max_retries=0,  # one request per batch: the SDK's own retries are off too (index.pinecone_retries)
        )
        index = PineconeIndex(Path(tmp), options)
        index.client.data_plane(dimension=dim)  # create the index outside the timing
        builder = index.builder(None, {"dim": dim, "model": "benchmark"})
        builder.upsert(batch)
        started = time.perf_counter()
        try:
            builder.commit()
        except PineconeIndexError as exc:
            return "fails: 413" if "413" in str(exc) else f"fails: {type(exc.__cause__).__name__}"
        seconds = time.perf_counter() - started
        return f"{len(batch.vectors) / seconds:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vectors", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--latency-ms", default="0,50")
    parser.add_argument("--batch-sizes", default="50,100,200,400")
    parser.add_argument("--concurrency", default="1,4,8,16")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    batch = synthetic(args.vectors, args.dim)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"Pinecone upsert to the stand-in, vectors/s ({args.vectors} vectors, dim {args.dim}, metadata as stored)")
    print(f"{machine()}; {stamp()}\n")
    print("| added latency | batch | " + " | ".join(f"concurrency {c}" for c in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    for latency_ms in (float(v) for v in args.latency_ms.split(",")):
        for size in sizes:
            cells = [run(batch, args.dim, latency_ms / 1000, size, c) for c in levels]
            print(f"| {latency_ms:.0f} ms | {size} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
