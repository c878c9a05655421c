"""Embedding throughput at scale on one machine: torch, ONNX Runtime (and ONNX int8) side by side on
the same real records, their agreement, the dense retrieval quality of each, and the pipeline / bound
ratio on a generated 10,000-record source.

    python benchmarks/scale.py --quick --json     # 200 real records, torch and ONNX only (< 2 minutes)
    python benchmarks/scale.py --json             # 1,000 real records, torch, ONNX, int8, MRR; pipeline on 10,000
    python benchmarks/scale.py --pipeline-records 0   # skip the pipeline part

Prints one JSON object (--json) or a Markdown summary for docs/PERFORMANCE.md. No record text is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import REAL_CSV, machine, real_records, stamp

from patientinsight.embedding import PACKAGED_MODEL, Embedder
from patientinsight.evaluation import build_queries, evaluate
from patientinsight.settings import Settings

V1_RECORDS = 167_034


def timed_encode(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    vectors = embedder.encode(texts)
    return vectors, len(texts) / (time.perf_counter() - started)


def dense_mrr(records: pd.DataFrame, doc_vectors: np.ndarray, embedder: Embedder) -> dict[str, float]:
    """MRR of exact dense search over these records for the holdout half's queries (the evaluation
    harness's queries and metrics): short queries (first sentences) encoded by the same embedder, and
    full queries (the whole record, whose vector is its document vector)."""
    uids = records["uid"].tolist()
    row_of = {uid: i for i, uid in enumerate(uids)}
    out: dict[str, float] = {}
    for mode in ("short", "full"):
        queries = build_queries(records, mode=mode, split="holdout")
        if mode == "short":
            query_vectors = embedder.encode([q.text for q in queries])
        else:
            query_vectors = doc_vectors[[row_of[q.uid] for q in queries]]
        position = {q.uid: i for i, q in enumerate(queries)}

        def retrieve(q: Any, k: int, vectors: np.ndarray = query_vectors, at: dict[str, int] = position) -> list[str]:
            return [uids[i] for i in np.argsort(-(doc_vectors @ vectors[at[q.uid]]))[:k]]

        metrics = evaluate(queries, retrieve)
        out[f"{mode}_mrr"] = round(float(metrics["mrr"]), 4)
        out[f"{mode}_queries"] = int(metrics["queries"])
    return out


def generated_source(path: Path, n: int) -> Path:
    """n records in the v1 CSV format: the real records repeated with new uids and a varied first word."""
    raw = pd.read_csv(REAL_CSV, dtype=str, keep_default_na=False)
    copies = []
    for k in range(-(-n // len(raw))):
        copy = raw.copy()
        copy["patient_uid"] = copy["patient_uid"] + f".r{k}"
        copy["patient"] = f"Copy {k}. " + copy["patient"]
        copies.append(copy)
    pd.concat(copies, ignore_index=True).head(n).to_csv(path, index=False)
    return path


def pipeline_ratio(n: int, tmp: Path, backend: str) -> dict[str, Any]:
    """Whole ingest (run_ingest) against encoding the same texts alone, in the same process."""
    from patientinsight.ingest import run_ingest
    from patientinsight.pipeline import make_embedder

    source = generated_source(tmp / f"generated-{n}.csv", n)
    settings = Settings(home=tmp / "home", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db", embedding_backend=backend)
    embedder = make_embedder(settings)
    texts = real_records(source)["text"].tolist()
    embedder.encode(texts[:8])
    started = time.perf_counter()
    embedder.embed_documents(texts)
    bound = time.perf_counter() - started
    started = time.perf_counter()
    report = run_ingest(str(source), settings, run_id="scale")
    total = time.perf_counter() - started
    return {
        "pipeline_records": int(report["read"]),
        "pipeline_s": round(total, 1),
        "bound_s": round(bound, 1),
        "pipeline_bound_ratio": round(bound / total, 3),
        "pipeline_stage_s": {k: round(v, 1) for k, v in report["seconds"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 records, torch and ONNX, no pipeline")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--records", type=int, default=None, help="real records to encode (default 1000, quick 200)")
    parser.add_argument("--pipeline-records", type=int, default=10_000, help="generated records; 0 skips")
    parser.add_argument("--no-int8", action="store_true", help="leave out the int8 model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = args.records or (200 if args.quick else 1000)
    int8 = not (args.quick or args.no_int8)

    records = real_records()
    records = records.head(n).reset_index(drop=True)
    texts = records["text"].tolist()
    result: dict[str, Any] = {"machine": machine(), "date": stamp(), "cores": os.cpu_count(), "texts": len(texts)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        embedders = {"torch": Embedder(PACKAGED_MODEL, strategy="truncate", backend="torch")}
        embedders["onnx"] = Embedder(PACKAGED_MODEL, strategy="truncate", backend="onnx", cache_dir=tmp / "models")
        if int8:
            embedders["int8"] = Embedder(
                PACKAGED_MODEL, strategy="truncate", backend="onnx", cache_dir=tmp / "models", quantize=True
            )
        for name, embedder in embedders.items():
            started = time.perf_counter()
            embedder.encode(texts[:8])  # load, export (ONNX), warm: not counted in texts/s
            result[f"{name}_start_s"] = round(time.perf_counter() - started, 1)
            if name != "torch" and embedder.active_backend != "onnx":
                raise SystemExit(f"{name}: the ONNX backend fell back to torch (see the log)")
        tokenizer = embedders["torch"].model.tokenizer
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
        result["mean_tokens"] = round(float(np.mean(lengths)), 1)
        result["threads"] = embedders["torch"].threads
        vectors: dict[str, np.ndarray] = {}
        for name, embedder in embedders.items():
            vectors[name], rate = timed_encode(embedder, texts)
            result[f"{name}_texts_per_s"] = round(rate, 1)
        result["cosine_min"] = round(float((vectors["torch"] * vectors["onnx"]).sum(axis=1).min()), 6)
        if int8:
            result["int8_cosine_min"] = round(float((vectors["torch"] * vectors["int8"]).sum(axis=1).min()), 6)
        if not args.quick:
            for name, embedder in embedders.items():
                for key, value in dense_mrr(records, vectors[name], embedder).items():
                    result[f"{name}_dense_{key}"] = value
        best = max(result["torch_texts_per_s"], result["onnx_texts_per_s"])
        result["v1_first_ingest_h_at_best_rate"] = round(V1_RECORDS / best / 3600, 2)
        if not args.quick and args.pipeline_records:
            result.update(pipeline_ratio(args.pipeline_records, tmp, "onnx"))
    if args.json:
        print(json.dumps(result))
        return
    print(f"# embedding at scale: {result['texts']} real records; {result['machine']}; {result['date']}\n")
    print("| backend | texts/s | min cosine vs torch | dense MRR, short queries | dense MRR, full queries |")
    print("|---|---:|---:|---:|---:|")
    for name in embedders:
        cosine = {"torch": 1.0, "onnx": result["cosine_min"]}.get(name, result.get("int8_cosine_min"))
        short, full = (result.get(f"{name}_dense_{mode}_mrr", "-") for mode in ("short", "full"))
        print(f"| {name} | {result[f'{name}_texts_per_s']} | {cosine} | {short} | {full} |")
    print(f"\n{json.dumps(result)}")


if __name__ == "__main__":
    main()
