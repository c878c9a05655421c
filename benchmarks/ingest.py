"""Ingest throughput on the real records: each stage's time and records/s (of the warm run), beside
the embedding model's own bound (encoding the same texts alone, model already loaded).

    python benchmarks/ingest.py [--source PATH] [--limit N]

Prints a Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _common import REAL_CSV, machine, real_records, stamp

from patientinsight.embedding.encoder import make_embedder
from patientinsight.ingest.run import run_ingest
from patientinsight.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=REAL_CSV)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        tracking = f"sqlite:///{tmp}/mlflow.db"
        settings = Settings(home=Path(tmp) / "home", mlflow_tracking_uri=tracking)
        embedder = make_embedder(settings)
        texts = real_records(args.source)["text"].tolist()[: args.limit]
        embedder.encode(texts[:8])  # load and warm the model: neither side pays for loading

        started = time.perf_counter()
        embedder.embed_documents(texts)
        bound = time.perf_counter() - started

        # Cold: the first ingest in this process pays for importing ydata-profiling and MLflow and
        # for creating the MLflow store. Warm: a second ingest into a fresh index, as a long-lived
        # worker would run it. Both are printed.
        started = time.perf_counter()
        run_ingest(str(args.source), settings, limit=args.limit, run_id="cold")
        cold = time.perf_counter() - started

        settings = Settings(home=Path(tmp) / "warm", mlflow_tracking_uri=tracking)
        started = time.perf_counter()
        report = run_ingest(str(args.source), settings, limit=args.limit, run_id="warm")
        total = time.perf_counter() - started

    n = report["read"]
    print(f"# ingest of {n} real records ({args.source.name}); {machine()}; {stamp()}")
    print(f"strategy {settings.embed_strategy}, batch {settings.embed_batch_size}\n")
    print("| stage | seconds | records/s |")
    print("|---|---:|---:|")
    for stage, seconds in report["seconds"].items():
        rate = f"{n / seconds:.1f}" if seconds > 0 else "-"
        print(f"| {stage} | {seconds:.2f} | {rate} |")
    print(f"| **pipeline, wall (incl. MLflow), warm process** | {total:.2f} | {n / total:.1f} |")
    print(f"| pipeline, wall, cold process (imports, new MLflow store) | {cold:.2f} | {n / cold:.1f} |")
    print(f"| embedding bound (same texts, encode only) | {bound:.2f} | {len(texts) / bound:.1f} |")
    print(f"\npipeline / bound = {bound / total:.1%} warm, {bound / cold:.1%} cold")
    print(f"(read {n}, indexed {report['indexed']}, "
          f"quarantined {report['quarantined']}, embedded {report['embedded']})")  # fmt: skip


if __name__ == "__main__":
    main()
