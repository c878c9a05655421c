"""Latency and throughput of POST /v1/query (no generation) on a real uvicorn process of the service:
p50, p95, p99 and requests/s at concurrency 1, 8 and 32, for the 1,000 real records and for a
250,000-record index (the real records plus generated ones: random unit vectors, and short texts
made of real opening sentences for the lexical index), and the service's resident memory.

    python benchmarks/query_latency.py [--records 250000] [--retrievers lexical,dense] [--requests 200]
    python benchmarks/query_latency.py --encode-only    # query encoding alone, per backend and precision

Prints a Markdown table for docs/PERFORMANCE.md. Queries are the first two sentences of real records.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
from _common import REAL_CSV, machine, stamp

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.lexical import bm25_params, lexical_index_hook
from patientinsight.index.types import META_COLUMNS, EmbeddedBatch
from patientinsight.ingest.run import run_ingest
from patientinsight.retrieval.passages import first_sentences
from patientinsight.settings import Settings


def build_real(home: Path) -> str:
    report = run_ingest(str(REAL_CSV), Settings(home=home), run_id="query-latency")
    return str(report["index_version"])


def build_large(real_home: Path, home: Path, total: int, seed: int = 7) -> str:
    """The real version plus generated records up to `total`, through the index's own builder."""
    real = EmbeddedIndex(real_home / "index")
    version = real.published()
    assert version is not None
    reader = real.open(version)
    records = reader.frame([*META_COLUMNS, "chunk_count"])
    vectors = np.asarray(reader.vectors)
    extra = total - len(records)
    rng = np.random.default_rng(seed)
    generated = rng.standard_normal((extra, vectors.shape[1]), dtype=np.float32)
    generated /= np.linalg.norm(generated, axis=1, keepdims=True)
    openings = [first_sentences(t) for t in records["text"]]
    picks = rng.integers(0, len(records), extra)
    fake = pd.DataFrame(
        {
            "uid": [f"gen-{i}" for i in range(extra)],
            "pmid": [str(90000000 + i) for i in range(extra)],
            "title": records["title"].to_numpy()[picks],
            "text": np.asarray(openings, dtype=object)[picks],
            "age_years": rng.uniform(0, 95, extra).round(1),
            "sex": rng.choice(["M", "F"], extra),
            "pub_date": "2020-01-01",
            "similar_patients": "{}",
            "relevant_articles": "{}",
            "content_hash": [f"gen{i}" for i in range(extra)],
        }
    )
    index = EmbeddedIndex(home / "index")
    builder = index.builder(None, manifest=real.manifest(version))
    builder.upsert(EmbeddedBatch(records.loc[:, list(META_COLUMNS)], vectors, records["chunk_count"].to_numpy()))
    builder.upsert(EmbeddedBatch(fake, generated, np.ones(extra, dtype=np.int64)))
    large = builder.commit(staged_extras=lexical_index_hook(bm25_params(Settings())))
    index.publish(large)
    return large


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(home: Path, retriever: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PATIENTINSIGHT_HOME": str(home),
        "PATIENTINSIGHT_DEV_MODE": "1",
        "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "10000000",
        "PATIENTINSIGHT_RETRIEVER": retriever,
        "HF_HUB_OFFLINE": "1",
    }
    log = (home / f"service-{retriever}.log").open("wb")
    cmd = [sys.executable, "-m", "patientinsight.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            body = httpx.get(url + "/readyz", timeout=2).json()
            if body["ready"] and body["model_warm"]:
                return process, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    process.terminate()
    raise SystemExit(f"the service did not become ready; see {home}")


async def run_level(url: str, queries: list[str], concurrency: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    next_query = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, next_query
        while next_query < requests:
            text = queries[next_query % len(queries)]
            next_query += 1
            started = time.perf_counter()
            try:
                response = await client.post("/v1/query", json={"text": text, "k": 5, "generate": False})
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for text in queries[:5]:  # warm the path
            await client.post("/v1/query", json={"text": text, "k": 5, "generate": False})
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "rps": len(latencies) / elapsed, "errors": errors}


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def encode_latency(queries: list[str], repeats: int) -> list[tuple[str, dict[str, float]]]:
    """Encoding one query at a time, as the service does, with its thread settings (one BLAS thread,
    the encoder on every core): p50/p99 ms for torch fp32 and the default backend and precision."""
    from threadpoolctl import threadpool_limits

    from patientinsight.embedding.encoder import Embedder
    from patientinsight.embedding.model import PACKAGED_MODEL

    threadpool_limits(limits=1, user_api="blas")
    rows = []
    default = Embedder(PACKAGED_MODEL, strategy="truncate")
    for backend, precision in (("torch", "fp32"), (default.requested.backend, default.requested.precision)):
        embedder = Embedder(PACKAGED_MODEL, strategy="truncate", backend=backend, precision=precision)
        embedder.embed_query("warm-up")
        times = []
        for query in queries[:repeats]:
            started = time.perf_counter()
            embedder.embed_query(query)
            times.append(1000 * (time.perf_counter() - started))
        quantiles = statistics.quantiles(times, n=100)
        rows.append((f"{backend} {precision}", {"p50": statistics.median(times), "p99": quantiles[98]}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=250_000)
    parser.add_argument("--retrievers", default="hybrid_rerank,lexical,dense", help="comma-separated")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (x2 at 8, x3 at 32)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--encode-only", action="store_true", help="only the query-encoding table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.encode_only:
        texts = pd.read_csv(REAL_CSV, usecols=["patient"])["patient"].astype(str)
        encoded = encode_latency([first_sentences(t) for t in texts.sample(frac=1.0, random_state=3)], args.requests)
        print(f"Query encoding alone, one query at a time, {machine()}, {stamp()}\n")
        print("| backend and precision | p50 ms | p99 ms |\n|---|---:|---:|")
        for name, r in encoded:
            print(f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} |")
        return

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="query-latency-"))
    real_home, large_home = work / "real", work / "large"
    if not (real_home / "index" / "CURRENT").exists():
        build_real(real_home)
    if not (large_home / "index" / "CURRENT").exists():
        build_large(real_home, large_home, args.records)
    real = EmbeddedIndex(real_home / "index")
    texts = real.open(str(real.published())).frame(["text"])["text"]
    queries = [first_sentences(t) for t in texts.sample(frac=1.0, random_state=3)]

    rows = []
    for label, home in (("1,000 real", real_home), (f"{args.records:,}", large_home)):
        for retriever in args.retrievers.split(","):
            process, url = start_service(home, retriever)
            try:
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    n = args.requests * (1 if concurrency == 1 else 2 if concurrency <= 8 else 3)
                    result = asyncio.run(run_level(url, queries, concurrency, n))
                    rows.append((label, retriever, concurrency, result, rss_mb(process.pid)))
                    print(f"{label} {retriever} c={concurrency}: {result}", file=sys.stderr)
            finally:
                process.terminate()
                process.wait(timeout=30)

    print(f"Query latency, POST /v1/query without generation (k=5), {machine()}, {stamp()}\n")
    print("| records | retriever | concurrency | p50 ms | p95 ms | p99 ms | requests/s | errors | resident MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, retriever, concurrency, r, rss in rows:
        print(
            f"| {label} | {retriever} | {concurrency} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
            f"| {r['rps']:.1f} | {r['errors']} | {rss:.0f} |"
        )


if __name__ == "__main__":
    main()
