"""Ingest at scale on one machine and on Airflow's workers, in one script:

- backends: every backend and precision (torch, ONNX Runtime, OpenVINO; fp32, bf16, int8) on the same
  real records: texts/s, the lowest cosine against torch fp32, the achieved GFLOP/s beside a matrix-
  multiply peak of that precision measured in the same run, and the shipped retriever's leave-one-out
  MRR for each kind of vectors (what decides whether a precision may be the default); the default is
  the pair that `auto` measured on this machine (embedding.choice), and how long choosing took;
- embed_stage: the embed stage of the ingest itself (run_ingest on the real records), the default
  against plain sentence-transformers torch fp32, alternated in one run;
- pipeline: the whole ingest (run_ingest) on generated records against encoding the same texts alone;
- rerun: a 250,000-record generated v1 CSV: peak memory, and the re-run over the unchanged source
  (benchmarks/scale_250k.py);
- sweep: patient_ingest on a real Airflow with the LocalExecutor, by shard count and pool slots;
- celery: the same DAG on the CeleryExecutor with one and two workers, one and two shards per worker
  (benchmarks/scale_celery.py).

    python benchmarks/scale.py --quick --json          # 200 real records: torch, ONNX, the default (< 3 min)
    python benchmarks/scale.py --parts backends        # every backend and precision on 1,000 records
    python benchmarks/scale.py --parts backends --pairs torch:fp32,openvino:int8 --save-vectors DIR
    python benchmarks/scale.py --parts embed_stage     # the ingest's embed stage, default / torch fp32
    python benchmarks/scale.py --json                  # everything (about 45 minutes on 2 cores)
    python benchmarks/scale.py --parts pipeline        # one part

Under an ISA cap (ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 ..., an older CPU emulated on this one) the
JSON says so in `isa_caps`: such numbers are an emulation on this CPU, not another machine's.

Prints one JSON object (--json) or Markdown tables for docs/PERFORMANCE.md. No record text is printed.
"""

from __future__ import annotations

import argparse
import functools
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

from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.hardware import ISA_CAPS, native_bf16
from patientinsight.embedding.model import PACKAGED_MODEL
from patientinsight.ingest.lake import run_key
from patientinsight.settings import Settings

V1_RECORDS = 167_034


def load() -> str:
    """The load average (1, 5, 15 min), printed beside the numbers: this machine is shared."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def timed_encode(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    vectors = embedder.encode(texts)
    return vectors, len(texts) / (time.perf_counter() - started)


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


PARTS = ("backends", "embed_stage", "pipeline", "rerun", "sweep", "celery")
SPLITS = ("tune", "holdout")
# (backend, precision) pairs of the full run; --quick keeps torch fp32, ONNX fp32 and the default.
QUICK_PAIRS = "torch:fp32,onnx:fp32"
PAIRS = [
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]
# The pre-existing keys of --json: torch fp32 is "torch", ONNX fp32 "onnx", ONNX int8 "int8".
OLD_NAMES = {("torch", "fp32"): "torch", ("onnx", "fp32"): "onnx", ("onnx", "int8"): "int8"}


def pair_name(backend: str, precision: str) -> str:
    return OLD_NAMES.get((backend, precision), f"{backend}_{precision}")


def matmul_peaks(threads: int, n_max: int = 2048, budget_s: float = 0.3, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of one square matrix product on `threads` threads, best of `repeats`:
    torch fp32 and bf16 matmul, and int8 x int8 -> int32 (torch._int_mm). The size is the largest up to
    `n_max` whose product takes about `budget_s`: where a precision is emulated (bf16 without AVX512_BF16
    or AMX: about 1 GFLOP/s on the AVX2-only EPYC) one 2048 product takes half a minute."""
    import torch

    torch.set_num_threads(threads)
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):

        def operands(n: int, dtype: Any = dtype) -> tuple[Any, Any]:
            if dtype == torch.int8:
                return torch.randint(-128, 127, (n, n), dtype=dtype), torch.randint(-128, 127, (n, n), dtype=dtype)
            return torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

        def product(a: Any, b: Any, dtype: Any = dtype) -> Any:
            return torch._int_mm(a, b) if dtype == torch.int8 else a @ b

        small = operands(256)
        rate = 2 * 256**3 / _best_seconds(functools.partial(product, *small), 1)  # warmed: kernel selection, threads
        n = int(min(n_max, max(256, (budget_s * rate / 2) ** (1 / 3))) // 256 * 256)
        a, b = operands(n)
        peaks[name] = round(2 * n**3 / _best_seconds(functools.partial(product, a, b), repeats) / 1e9, 1)
    peaks["int8_linear"] = _int8_linear_peak(n_max, repeats)
    return peaks


def _int8_linear_peak(n: int, repeats: int) -> float:
    """GOP/s of an int8 Linear layer as torch's quantized engine runs it (fbgemm/oneDNN: activations
    quantized per call, int8 weights): without VNNI, torch._int_mm falls back to a slow generic kernel
    (4 GOP/s on the AVX2-only EPYC), so this is the int8 rate an AVX2 CPU really reaches."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        layer = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)), {torch.nn.Linear}, dtype=torch.qint8
        )
    x = torch.randn(n, n)
    with torch.inference_mode():
        return round(2 * n**3 / _best_seconds(lambda: layer(x), repeats) / 1e9, 1)


def _best_seconds(call: Any, repeats: int) -> float:
    """The fastest of `repeats` timed calls, after one untimed call that warms it."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def model_gflop(lengths: list[int], layers: int = 6, hidden: int = 384) -> float:
    """Useful work of the encoder on texts of these token lengths (padding not counted): per layer and
    token, 24 h^2 for the projections and the feed-forward (4h), and 4 L h for attention."""
    return sum(layers * (24 * hidden**2 * n + 4 * hidden * n * n) for n in lengths) / 1e9


def shipped_mrr(records: pd.DataFrame, vectors: np.ndarray, embedder: Embedder, tmp: Path) -> dict[str, float]:
    """The shipped retriever (Settings' defaults, tuned BM25) under the leave-one-out protocol, on tune
    and holdout, short and full queries, over a version built from these vectors."""
    from patientinsight.evaluation.report import evaluate_retrievers
    from patientinsight.index.embedded import EmbeddedIndex
    from patientinsight.index.lexical import bm25_params, lexical_index_hook
    from patientinsight.index.types import EmbeddedBatch

    settings = Settings(home=tmp / "quality-home")
    index = EmbeddedIndex(tmp / f"quality-{embedder.active_backend}-{embedder.precision}")
    builder = index.builder(None, embedder.describe())
    builder.upsert(EmbeddedBatch(records, vectors, np.ones(len(records), dtype=np.int64)))
    reader = index.open(builder.commit(staged_extras=lexical_index_hook(bm25_params(settings))))
    out: dict[str, float] = {}
    for split in SPLITS:
        for row in evaluate_retrievers(reader, embedder, settings, (settings.retriever,), split=split):
            out[f"{split}_{row['queries_mode']}_mrr"] = row["mrr"]
            out[f"{split}_{row['queries_mode']}_queries"] = row["queries"]
    return out


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """'torch:fp32,openvino:int8' -> [("torch", "fp32"), ("openvino", "int8")] (torch fp32 always first)."""
    pairs = [tuple(item.split(":", 1)) for item in text.split(",") if item]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        raise SystemExit(f"unknown pairs {unknown}: choose from {PAIRS}")
    chosen = [(b, p) for b, p in pairs]
    return [("torch", "fp32")] + [p for p in chosen if p != ("torch", "fp32")]


def default_choice(cache: Path) -> tuple[tuple[str, str], dict[str, Any]]:
    """What `auto` encodes with on this machine (measured, or read from the cache), and what it cost."""
    started = time.perf_counter()
    default = Embedder(PACKAGED_MODEL, strategy="truncate", cache_dir=cache)  # backend, precision: auto
    chosen = default.requested
    info: dict[str, Any] = {
        "default_choice": chosen.line(),
        "default_choice_s": round(time.perf_counter() - started, 1),
    }
    if chosen.device == "cpu" and default.setting == ("auto", "auto"):
        found = default.measured()
        info["default_measured_fresh"] = found.fresh
        info["default_measured_table"] = [row.as_dict() for row in found.rows]
    return (chosen.backend, chosen.precision), info


def backends(
    n: int,
    tmp: Path,
    cache: Path,
    pairs: list[tuple[str, str]],
    quality: bool = True,
    rounds: int = 5,
    save_vectors: Path | None = None,
) -> dict[str, Any]:
    """The (backend, precision) pairs and the measured default on the same n real records, in one
    process: start-up, texts/s, agreement with torch fp32, GFLOP/s against the measured peak, and (with
    `quality`) the shipped retriever's MRR for each kind of vectors."""
    records = real_records().head(n).reset_index(drop=True)
    texts = records["text"].tolist()
    chosen, info = default_choice(cache)
    pairs = list(pairs) if chosen in pairs else [*pairs, chosen]
    result: dict[str, Any] = {"texts": len(texts), "rounds": rounds, **info}
    result["default_backend"], result["default_precision"] = chosen
    embedders = {}
    for backend, precision in pairs:
        name = pair_name(backend, precision)
        embedder = Embedder(PACKAGED_MODEL, strategy="truncate", backend=backend, precision=precision, cache_dir=cache)
        started = time.perf_counter()
        embedder.encode(texts[:40])  # load, export, convert, calibrate, warm (pipelined): not counted in texts/s
        result[f"{name}_start_s"] = round(time.perf_counter() - started, 1)
        if (embedder.active.backend, embedder.active.precision) != (backend, precision):
            raise SystemExit(f"{backend} {precision} fell back to {embedder.active.line()} (see the log)")
        embedders[(backend, precision)] = embedder
    tokenizer = embedders[("torch", "fp32")].model.tokenizer
    started = time.perf_counter()
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    result["tokenize_s"] = round(time.perf_counter() - started, 2)
    result["mean_tokens"] = round(float(np.mean(lengths)), 1)
    result["threads"] = embedders[("torch", "fp32")].threads
    gflop = model_gflop(lengths)
    result["gflop_per_text"] = round(gflop / len(texts), 2)
    result["matmul_peak_gflops"] = peaks = matmul_peaks(result["threads"])
    # Round-robin over the pairs, one slice of the texts each round, so that a busy spell of the machine
    # slows every pair alike; a pair's rate is its total texts over its total seconds.
    seconds = dict.fromkeys(embedders, 0.0)
    parts: dict[tuple[str, str], list[np.ndarray]] = {pair: [] for pair in embedders}
    step = -(-len(texts) // rounds)
    for start in range(0, len(texts), step):
        for pair, embedder in embedders.items():
            part, rate = timed_encode(embedder, texts[start : start + step])
            parts[pair].append(part)
            seconds[pair] += len(part) / rate
    vectors = {pair: np.concatenate(p) for pair, p in parts.items()}
    reference = vectors[("torch", "fp32")]
    for pair in embedders:
        name = pair_name(*pair)
        rate = len(texts) / seconds[pair]
        result[f"{name}_texts_per_s"] = round(rate, 1)
        result[f"{name}_cosine_min"] = round(float((reference * vectors[pair]).sum(axis=1).min()), 6)
        result[f"{name}_cosine_mean"] = round(float((reference * vectors[pair]).sum(axis=1).mean()), 6)
        result[f"{name}_gflops"] = round(gflop / (len(texts) / rate), 1)
        # int8: against the faster of the two int8 kernels (VNNI's _int_mm, or the quantized Linear on AVX2).
        peak = max(peaks["int8"], peaks["int8_linear"]) if pair[1] == "int8" else peaks[pair[1]]
        result[f"{name}_peak_share"] = round(result[f"{name}_gflops"] / peak, 2)
        if save_vectors is not None:
            save_vectors.mkdir(parents=True, exist_ok=True)
            np.save(save_vectors / f"{name}.npy", vectors[pair])
    if ("onnx", "fp32") in embedders:
        result["cosine_min"] = result["onnx_cosine_min"]  # the key of earlier runs: ONNX fp32 against torch
    result["default_texts_per_s"] = result[f"{pair_name(*chosen)}_texts_per_s"]
    result["default_speedup"] = round(result["default_texts_per_s"] / result["torch_texts_per_s"], 2)
    result["tokenize_share"] = round(result["tokenize_s"] / (len(texts) / result["default_texts_per_s"]), 3)
    print(json.dumps(result), file=sys.stderr, flush=True)  # the speeds, before the long quality part
    if quality:
        # One version per kind of vectors: torch fp32 (the reference), each reduced precision measured.
        kinds = {("torch", "fp32"), chosen, ("openvino", "int8"), ("onnx", "int8"), ("openvino", "bf16")}
        for pair in sorted(kinds & set(embedders)):
            measured = shipped_mrr(records, vectors[pair], embedders[pair], tmp)
            result.update({f"{pair_name(*pair)}_{k}": v for k, v in measured.items()})
            print(pair, json.dumps(measured), file=sys.stderr, flush=True)
    best = max(v for k, v in result.items() if k.endswith("_texts_per_s"))
    result["v1_embedding_h_at_best_rate"] = round(V1_RECORDS / best / 3600, 2)
    result["v1_embedding_h_at_default_rate"] = round(V1_RECORDS / result["default_texts_per_s"] / 3600, 2)
    return result


def embed_stage(n: int, tmp: Path, cache: Path, rounds: int = 2) -> dict[str, Any]:
    """The embed stage of the ingest itself (run_ingest's `seconds.embed`: every shard's encoder time) on
    n real records, the default (auto) against torch fp32, alternated: default, torch, then torch,
    default, ... so that a drift of the machine's load falls on both alike. Each ingest has its own home."""
    from patientinsight.embedding.encoder import make_embedder
    from patientinsight.ingest.run import run_ingest

    source = tmp / f"real-{n}.csv"
    pd.read_csv(REAL_CSV, dtype=str, keep_default_na=False).head(n).to_csv(source, index=False)
    configs = {"default": ("auto", "auto"), "torch": ("torch", "fp32")}

    def settings(name: str, number: int) -> Settings:
        backend, precision = configs[name]
        return Settings(
            home=tmp / f"stage-{name}-{number}", mlflow_tracking_uri=f"sqlite:///{tmp}/stage-mlflow.db",
            embedding_backend=backend, embedding_precision=precision, model_cache_dir=cache,
        )  # fmt: skip

    for name in configs:  # load, start and warm each encoder; the first ingest's imports are not in its embed stage
        make_embedder(settings(name, 0)).encode(["warm-up"] * 40)
    seconds = dict.fromkeys(configs, 0.0)
    result: dict[str, Any] = {"stage_records": n, "stage_rounds": rounds}
    for number in range(rounds):
        order = list(configs) if number % 2 == 0 else list(reversed(configs))
        for name in order:
            report = run_ingest(str(source), settings(name, number), run_id=f"stage-{name}-{number}")
            seconds[name] += float(report["seconds"]["embed"])
            result[f"stage_{name}_embedded"] = int(report["embedded"])
            print(json.dumps({"round": number, name: report["seconds"]}), file=sys.stderr, flush=True)
    chosen = make_embedder(settings("default", 0))
    result["stage_default"] = f"{chosen.active_backend} {chosen.precision}"
    for name in configs:
        result[f"stage_{name}_embed_s"] = round(seconds[name], 1)
        result[f"stage_{name}_records_per_s"] = round(rounds * n / seconds[name], 1)
    result["stage_ratio"] = round(seconds["torch"] / seconds["default"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 records: torch, ONNX and the default only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--no-quality", action="store_true", help="backends: speeds only, no retrieval quality")
    parser.add_argument("--records", type=int, default=None, help="real records to encode (default 1000, quick 200)")
    parser.add_argument("--pairs", default=None, help="backends: backend:precision pairs (default all; quick: "
                        f"{QUICK_PAIRS}); torch:fp32 and the default are always measured")  # fmt: skip
    parser.add_argument("--save-vectors", type=Path, default=None, help="backends: each pair's vectors as .npy")
    parser.add_argument("--model-cache", type=Path, default=None, help="default: a new one (start-up measured)")
    parser.add_argument("--stage-records", type=int, default=1000, help="embed_stage: real records per ingest")
    parser.add_argument("--stage-rounds", type=int, default=2, help="embed_stage: ingests of each encoder")
    parser.add_argument("--pipeline-records", type=int, default=10_000, help="generated records of the ratio")
    parser.add_argument("--pipeline-backend", default="auto", choices=("auto", "torch", "onnx", "openvino"))
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

    result: dict[str, Any] = {"machine": machine(), "date": stamp(), "cores": os.cpu_count(), "load": load()}
    caps = {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}
    if caps:
        result["isa_caps"] = caps  # an emulation of an older CPU on this one: say so beside every number
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache = args.model_cache or tmp / "models"
        if "backends" in parts:
            n = args.records or (200 if args.quick else 1000)
            # bf16 without AVX512_BF16 or AMX is emulated (about 1 GFLOP/s): hours for 1,000 texts, and no
            # candidate of the measured choice either (embedding.hardware.native_bf16).
            every = [pair for pair in PAIRS if pair[1] != "bf16" or native_bf16()]
            pairs = parse_pairs(args.pairs or QUICK_PAIRS) if args.quick or args.pairs else every
            quality = not (args.no_quality or args.quick)
            result.update(backends(n, tmp, cache, pairs, quality=quality, save_vectors=args.save_vectors))
        if "embed_stage" in parts:
            result.update(embed_stage(args.stage_records, tmp, cache, args.stage_rounds))
        if "pipeline" in parts:
            result.update(pipeline_ratio(args.pipeline_records, tmp, args.pipeline_backend))
        if "rerun" in parts:
            from scale_250k import measure_250k

            result.update({f"rerun_{k}": v for k, v in measure_250k(tmp, args.rerun_records).items()})
        if "sweep" in parts:
            points = [tuple(int(x) for x in point.split("x")) for point in args.sweep.split(",")]
            result["sweep"] = shard_sweep(tmp, args.sweep_records, [(a, b) for a, b in points])
        if "celery" in parts:
            from scale_celery import celery_sweep

            result["celery"] = celery_sweep(tmp, args.sweep_records)
    result["load_after"] = load()
    if args.json:
        print(json.dumps(result))
        return
    print(f"# scale: {result['machine']}; {result['date']}; load {result['load']} -> {result['load_after']}")
    print(f"ISA caps (an emulation on this CPU): {caps}\n" if caps else "")
    if "backends" in parts:
        peaks = result["matmul_peak_gflops"]
        print(f"Default: {result['default_choice']}. {result['mean_tokens']} tokens per text on average, ")
        print(f"{result['gflop_per_text']} GFLOP each; matmul peaks (GFLOP/s, int8 GOP/s): {peaks}.\n")
        print("| backend | precision | texts/s | x torch fp32 | min cosine vs torch fp32 | GFLOP/s | of peak |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for backend, precision in PAIRS:
            name = pair_name(backend, precision)
            if f"{name}_texts_per_s" not in result:
                continue
            rate = result[f"{name}_texts_per_s"]
            print(
                f"| {backend} | {precision} | {rate} | {rate / result['torch_texts_per_s']:.2f} | "
                f"{result[f'{name}_cosine_min']} | {result[f'{name}_gflops']} | {result[f'{name}_peak_share']:.0%} |"
            )
        quality = [pair for pair in PAIRS if f"{pair_name(*pair)}_holdout_short_mrr" in result]
        if quality:
            print("\n| vectors | tune short | tune full | holdout short | holdout full | queries (tune/holdout) |")
            print("|---|---:|---:|---:|---:|---:|")
            for pair in quality:
                name = pair_name(*pair)
                cells = " | ".join(
                    str(result[f"{name}_{split}_{mode}_mrr"]) for split in SPLITS for mode in ("short", "full")
                )
                print(
                    f"| {pair[0]} {pair[1]} | {cells} | {result[f'{name}_tune_short_queries']}/"
                    f"{result[f'{name}_holdout_short_queries']} |"
                )
    if "embed_stage" in parts:
        print(
            f"\nEmbed stage of run_ingest, {result['stage_records']} real records, "
            f"{result['stage_rounds']} ingests each:"
        )
        print("| encoder | embed stage s | records/s |\n|---|---:|---:|")
        print(
            f"| default ({result['stage_default']}) | {result['stage_default_embed_s']} | "
            f"{result['stage_default_records_per_s']} |"
        )
        print(f"| torch fp32 | {result['stage_torch_embed_s']} | {result['stage_torch_records_per_s']} |")
        print(f"\ndefault / torch fp32 = {result['stage_ratio']}x")
    if "celery" in parts:
        from scale_celery import table

        print("\n" + table(result["celery"]))
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
