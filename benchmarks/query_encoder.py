"""The query encoder: which pair encodes one query fastest, and whether queries encoded by another pair of
the documents' numerics class rank as well.

A version's queries are encoded by the pair of its numerics class measured fastest on one query
(Embedder.for_version, embedding.measure.query_pair), which need not be the pair that encoded its
documents. This prints, on the real records, in one process:
1. one short query's encoding time (p50 and p99 over the first sentences of real records, in turn
   across the pairs so a busy spell slows all alike) for every exact pair installed here;
2. the shipped retriever's leave-one-out MRR (tune and holdout, short and full queries) over ONE set of
   document vectors (the measured document choice, or --documents), with its queries encoded by each
   exact pair in turn: the differences say whether the query pair may differ from the documents' pair.

    python benchmarks/query_encoder.py [--documents torch:bf16] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, real_records, stamp
from scale import default_choice, pair_name, parse_pairs, shipped_mrr

from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.hardware import NUMERICS, candidates
from patientinsight.embedding.model import PACKAGED_MODEL
from patientinsight.retrieval.passages import first_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", help="the pair that encodes the documents (default: the measured choice)")
    parser.add_argument("--queries", type=int, default=300, help="single queries timed per pair")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    records = real_records()
    texts = records["text"].tolist()
    short = [first_sentences(t) for t in texts]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cache = tmp / "models"
        documents = parse_pairs(args.documents)[-1] if args.documents else default_choice(cache)[0]
        result: dict[str, Any] = {"machine": machine(), "date": stamp(), "documents": pair_name(*documents)}
        exact = [p for p in candidates() if NUMERICS[p[1]] == NUMERICS[documents[1]]]
        embedders = {}
        for backend, precision in exact:
            embedder = Embedder(PACKAGED_MODEL, "truncate", backend=backend, precision=precision, cache_dir=cache)
            embedder.encode(short[:40])  # load, export, convert and warm: not timed
            if embedder.active.pair == (backend, precision):
                embedders[(backend, precision)] = embedder
        times: dict[tuple[str, str], list[float]] = {pair: [] for pair in embedders}
        for query in short[: args.queries]:
            for pair, embedder in embedders.items():
                started = time.perf_counter()
                embedder.embed_query(query)
                times[pair].append((time.perf_counter() - started) * 1000)
        for pair, ms in times.items():
            result[f"{pair_name(*pair)}_query_p50_ms"] = round(float(np.percentile(ms, 50)), 2)
            result[f"{pair_name(*pair)}_query_p99_ms"] = round(float(np.percentile(ms, 99)), 2)
        vectors = embedders[documents].encode(texts)
        for pair, embedder in embedders.items():
            measured = shipped_mrr(records, vectors, embedder, tmp / pair_name(*pair))
            result.update({f"queries_{pair_name(*pair)}_{k}": v for k, v in measured.items()})
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
