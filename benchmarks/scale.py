"""Ingest at scale on one machine and on Airflow's workers, in one script:

- backends: torch, ONNX Runtime (and ONNX int8) on the same real records: texts/s, the lowest cosine
  between their vectors, and the dense retrieval quality of each;
- pipeline: the whole ingest (run_ingest) on generated records against encoding the same texts alone;
- rerun: a 250,000-record generated v1 CSV: peak memory, and the re-run over the unchanged source
  (benchmarks/scale_250k.py);
- sweep: patient_ingest on a real Airflow with the LocalExecutor, by shard count and pool slots.

    python benchmarks/scale.py --quick --json          # 200 real records, torch and ONNX (< 2 minutes)
    python benchmarks/scale.py --json                  # everything (about 40 minutes on 2 cores)
    python benchmarks/scale.py --parts pipeline        # one part

Prints one JSON object (--json) or Markdown tables for docs/PERFORMANCE.md. No record text is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import REAL_CSV, machine, real_records, stamp

from patientinsight.embedding.encoder import PACKAGED_MODEL, Embedder
from patientinsight.evaluation.metrics import build_queries, evaluate_queries
from patientinsight.ingest.lake import run_key
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

        metrics = evaluate_queries(queries, retrieve)
        out[f"{mode}_mrr"] = round(float(metrics["mrr"]), 4)
        out[f"{mode}_queries"] = int(metrics["queries"])
    return out


def generated_source(path: Path, n: int, tag: str = "r") -> Path:
    """n records in the v1 CSV format: the real records repeated with new uids (suffix `.<tag><copy>`,
    so sources with different tags share no record) and a varied first word."""
    raw = pd.read_csv(REAL_CSV, dtype=str, keep_default_na=False)
    copies = []
    for k in range(-(-n // len(raw))):
        copy = raw.copy()
        copy["patient_uid"] = copy["patient_uid"] + f".{tag}{k}"
        copy["patient"] = f"Copy {k}. " + copy["patient"]
        copies.append(copy)
    pd.concat(copies, ignore_index=True).head(n).to_csv(path, index=False)
    return path


def pipeline_ratio(n: int, tmp: Path, backend: str) -> dict[str, Any]:
    """Whole ingest (run_ingest) against encoding the same texts alone, in the same process."""
    from patientinsight.embedding.encoder import make_embedder
    from patientinsight.ingest.run import run_ingest

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


def _seconds_between(first: str, last: str) -> float:
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


def shard_sweep(tmp: Path, records: int, points: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """patient_ingest on a real Airflow with the LocalExecutor (the project's configuration, PostgreSQL
    when reachable), once per (shards, pool slots) point, each on `records` new generated records:
    the run's wall time, the embed tasks' span (first shard start to last shard end) and their sum."""
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    from tests.integration.airflow_stack import AirflowStack

    stack = AirflowStack.start(repo, tmp / "stack")
    rows = []
    try:
        stack.wait_for_dag("patient_ingest")
        for shards, slots in points:
            pool = {"name": "embedding", "slots": slots, "include_deferred": False}
            stack.api("PATCH", "/api/v2/pools/embedding", pool)
            source = generated_source(tmp / f"sweep-{shards}x{slots}.csv", records, tag=f"s{shards}x{slots}_")
            conf = {"source_uri": str(source), "shard_size": -(-records // shards), "max_mrr_drop": 1.0}
            started = time.perf_counter()
            run = stack.api("POST", "/api/v2/dags/patient_ingest/dagRuns", {"logical_date": None, "conf": conf})
            done = stack.wait_for_run("patient_ingest", run["dag_run_id"], timeout_s=3600)
            wall = time.perf_counter() - started
            path = f"/api/v2/dags/patient_ingest/dagRuns/{run['dag_run_id']}/taskInstances/embed/listMapped"
            embeds = stack.api("GET", path)["task_instances"]
            report_file = stack.patientinsight_home / "lake" / "runs" / run_key(run["dag_run_id"]) / "report.json"
            report = json.loads(report_file.read_text())
            span = _seconds_between(min(t["start_date"] for t in embeds), max(t["end_date"] for t in embeds))
            rows.append(
                {
                    "shards": len(embeds),
                    "pool_slots": slots,
                    "embedded": report["embedded"],
                    "run_s": round(_seconds_between(done["start_date"], done["end_date"]), 1),
                    "trigger_to_done_s": round(wall, 1),
                    "embed_span_s": round(span, 1),
                    "embed_task_sum_s": round(sum(float(t["duration"]) for t in embeds), 1),
                    "encode_s": round(report["seconds"]["embed"], 1),
                    "records_per_s_run": round(report["embedded"] / max(wall, 1e-9), 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        stack.stop()
    return rows


PARTS = ("backends", "pipeline", "rerun", "sweep")


def backends(n: int, tmp: Path, int8: bool, quality: bool) -> dict[str, Any]:
    """torch, ONNX (and int8) on the same n real records: texts/s, agreement, dense MRR."""
    records = real_records().head(n).reset_index(drop=True)
    texts = records["text"].tolist()
    result: dict[str, Any] = {"texts": len(texts)}
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
    if quality:
        for name, embedder in embedders.items():
            for key, value in dense_mrr(records, vectors[name], embedder).items():
                result[f"{name}_dense_{key}"] = value
    best = max(result["torch_texts_per_s"], result["onnx_texts_per_s"])
    result["v1_embedding_h_at_best_rate"] = round(V1_RECORDS / best / 3600, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 records, torch and ONNX only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--records", type=int, default=None, help="real records to encode (default 1000, quick 200)")
    parser.add_argument("--no-int8", action="store_true", help="leave out the int8 model")
    parser.add_argument("--pipeline-records", type=int, default=10_000, help="generated records of the ratio")
    parser.add_argument("--pipeline-backend", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--rerun-records", type=int, default=250_000, help="generated records of the re-run")
    parser.add_argument("--sweep-records", type=int, default=1000, help="generated records per sweep point")
    parser.add_argument(
        "--sweep", default="1x1,2x1,4x1,2x2,4x2", help="shards x pool slots points of the LocalExecutor sweep"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parts = ["backends"] if args.quick else [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")

    result: dict[str, Any] = {"machine": machine(), "date": stamp(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "backends" in parts:
            n = args.records or (200 if args.quick else 1000)
            result.update(backends(n, tmp, int8=not (args.quick or args.no_int8), quality=not args.quick))
        if "pipeline" in parts:
            result.update(pipeline_ratio(args.pipeline_records, tmp, args.pipeline_backend))
        if "rerun" in parts:
            from scale_250k import measure_250k

            result.update({f"rerun_{k}": v for k, v in measure_250k(tmp, args.rerun_records).items()})
        if "sweep" in parts:
            points = [tuple(int(x) for x in point.split("x")) for point in args.sweep.split(",")]
            result["sweep"] = shard_sweep(tmp, args.sweep_records, [(a, b) for a, b in points])
    if args.json:
        print(json.dumps(result))
        return
    print(f"# scale: {result['machine']}; {result['date']}\n")
    if "backends" in parts:
        print("| backend | texts/s | min cosine vs torch | dense MRR, short queries | dense MRR, full queries |")
        print("|---|---:|---:|---:|---:|")
        for name in ("torch", "onnx", "int8"):
            if f"{name}_texts_per_s" not in result:
                continue
            cosine = {"torch": 1.0, "onnx": result["cosine_min"]}.get(name, result.get("int8_cosine_min"))
            short, full = (result.get(f"{name}_dense_{mode}_mrr", "-") for mode in ("short", "full"))
            print(f"| {name} | {result[f'{name}_texts_per_s']} | {cosine} | {short} | {full} |")
    if "sweep" in parts:
        print("\n| shards | pool slots | embedded | DAG run s | embed span s | embed tasks, sum s | records/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for row in result["sweep"]:
            print(
                f"| {row['shards']} | {row['pool_slots']} | {row['embedded']} | {row['run_s']} | "
                f"{row['embed_span_s']} | {row['embed_task_sum_s']} | {row['records_per_s_run']} |"
            )
    print(f"\n{json.dumps(result)}")


if __name__ == "__main__":
    main()
