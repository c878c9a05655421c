"""Where one query's time goes: the stages of the default retriever (hybrid_rerank) timed one by one, in
the service's process settings (one BLAS thread, the encoder on every core), on a kept home such as
the one `benchmarks/full_size.py --keep DIR` leaves.

    python benchmarks/search_stages.py --home /tmp/full-250k/home [--queries 300]

Per query, in turn (so every stage sees the caches as the others leave them, as in the service):
- encode: the query's vector alone (Embedder.for_version, as the service encodes it);
- bm25: every record's BM25 score (LexicalIndex.scores);
- pool: BM25, hiding and the partition that picks the rerank candidates (Searcher.rerank_pool);
- dense_pool: the candidates' dense scores from their stored vectors (reader.scores_at);
- search_given_vector: the whole search with the vector given (no encoding);
- search: the whole search as shipped (encoding overlapped with BM25 in another thread);
- cases: search plus reading the 5 hits' records (CaseIndex.search);
- retrieve: cases plus each hit's best-matching sentences (retrieval.cases.retrieve: what POST /v1/query runs
  without generation, less the HTTP layer).
Queries are the first sentences of the real records, as in full_size.py. Prints a Markdown table or
one JSON object (--json). No record text is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine, stamp
from full_size import queries
from threadpoolctl import threadpool_limits

from patientinsight.embedding.encoder import make_embedder
from patientinsight.index.factory import make_index
from patientinsight.retrieval.cases import CaseIndex, retrieve
from patientinsight.settings import Settings

STAGES = ("encode", "bm25", "pool", "dense_pool", "search_given_vector", "search", "cases", "retrieve")


def timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call(*args, **kwargs)
    return value, (time.perf_counter() - started) * 1000


def measure(home: Path, n: int, k: int, threads: int | None) -> dict[str, Any]:
    threadpool_limits(limits=1, user_api="blas")  # as serving.app does
    settings = Settings(home=home) if threads is None else Settings(home=home, embed_threads=threads)
    index = make_index(settings)
    version = index.published()
    if version is None:
        raise SystemExit(f"{home} has no published version")
    cases = CaseIndex.for_settings(index.open(version), make_embedder(settings), settings)
    searcher = cases.searcher
    texts = queries(n + 20)
    for text in texts[:20]:  # warm the model, the mapped pages and the caches
        cases.search(text, k)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    lexical = searcher.lexical

    def fresh(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
        lexical._last = None  # BM25 keeps the last query's scores (for the gate): every stage scores anew
        return timed(call, *args, **kwargs)

    for text in texts[20:]:
        vector, ms = fresh(searcher.query_vector, text)
        times["encode"].append(ms)
        times["bm25"].append(fresh(lexical.scores, text)[1])
        (pool, _, _), ms = fresh(searcher.rerank_pool, text, None)
        times["pool"].append(ms)
        times["dense_pool"].append(fresh(searcher.reader.scores_at, vector, pool)[1])
        times["search_given_vector"].append(fresh(searcher.search, text, k, vector=vector)[1])
        times["search"].append(fresh(searcher.search, text, k)[1])
        times["cases"].append(fresh(cases.search, text, k)[1])
        times["retrieve"].append(fresh(retrieve, cases, text, k)[1])
    result: dict[str, Any] = {
        "records": cases.count(),
        "version": version,
        "retriever": cases.retriever,
        "query_encoder": f"{searcher.embedder.active_backend} {searcher.embedder.precision}",
        "encoder_threads": searcher.embedder.threads,
        "queries": n,
        "k": k,
        "load": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }
    for stage, values in times.items():
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        result[f"{stage}_p50_ms"] = round(statistics.median(values), 2)
        result[f"{stage}_p99_ms"] = round(cuts[98], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a PATIENTINSIGHT_HOME with a published version")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=5, help="cases per query (the benchmarks' POST /v1/query asks 5)")
    parser.add_argument("--threads", type=int, default=None, help="the encoder's threads (default: the settings')")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args.home, args.queries, args.k, args.threads)
    result["machine"] = machine()
    result["date"] = stamp()
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['records']:,} records, {result['retriever']}, query encoder {result['query_encoder']} on "
        f"{result['encoder_threads']} threads, "
        f"{args.queries} queries, k={args.k}, load {result['load']}; {result['machine']}, {result['date']}"
    )
    print("\n| stage | p50 ms | p99 ms |\n|---|---:|---:|")
    for stage in STAGES:
        print(f"| {stage} | {result[f'{stage}_p50_ms']} | {result[f'{stage}_p99_ms']} |")


if __name__ == "__main__":
    main()
