"""patient_ingest on a real CeleryExecutor, by worker count and shards per worker: the counterpart of the
LocalExecutor sweep of benchmarks/scale.py (`shard_sweep`), to measure what the real engine costs per shard.

One stack (tests/integration/celery_stack.py: PostgreSQL as metadata database and result backend, Redis
as broker, api-server, scheduler, dag-processor, triggerer), then for 1 and 2 `airflow celery worker`
processes (concurrency 1, the machine's cores split between them, the `embedding` pool at one slot per
worker) a run at 1 and at 2 shards per worker, each on `records` new generated records (the real records
with new uids, as the LocalExecutor sweep has them).

    python benchmarks/scale_celery.py                  # 1,000 records per point
    python benchmarks/scale_celery.py --records 400    # 15 minutes on a busy 2-core machine (docs/PERFORMANCE.md)
    python benchmarks/scale_celery.py --records 200 --json
    python benchmarks/scale_celery.py --first-ingest 50000 --json   # one real first ingest at size

`--first-ingest N`: once, N realistic records (benchmarks/realistic_corpus.py) into an empty index on 2
workers (concurrency 1, one core each), the real default embedder and the DAG's default shards: every task
instance's wall time, and its peak resident memory, sampled every 0.25 s from the worker's process tree (with
concurrency 1 a worker runs one task at a time, so the largest process under it is that task's).

Needs Redis (PATIENTINSIGHT_TEST_REDIS) and PostgreSQL (PATIENTINSIGHT_TEST_POSTGRES). No record text is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from _common import machine, stamp
from scale import _seconds_between, generated_source

from patientinsight.ingest.lake import run_key
from patientinsight.settings import Settings

REPO = Path(__file__).resolve().parents[1]
POINTS = ((1, 1), (1, 2), (2, 1), (2, 2))  # (workers, shards per worker)
DAG = "/api/v2/dags/patient_ingest"


def _mean_dispatch_s(embeds: list[dict[str, Any]]) -> float:
    """Mean seconds from a shard's queueing (scheduler to broker) to its start on a worker."""
    waits = [_seconds_between(t["queued_when"], t["start_date"]) for t in embeds if t.get("queued_when")]
    return sum(waits) / max(len(waits), 1)


def celery_sweep(tmp: Path, records: int) -> list[dict[str, Any]]:
    """One row per (workers, shards per worker) point: the DAG run's wall time, the embed tasks' span and
    sum, the encoder's own seconds, and the mean queue-to-start wait of a shard."""
    sys.path.insert(0, str(REPO))
    from patientinsight.embedding.encoder import make_embedder
    from tests.integration.celery_stack import CeleryStack, engine_unavailable

    reason = engine_unavailable()
    if reason:
        raise SystemExit(reason)
    cache = tmp / "models"
    make_embedder(Settings(home=tmp / "warm", model_cache_dir=cache)).encode(["warm-up"])  # export once
    cores = os.cpu_count() or 1
    stack = CeleryStack.start_celery(REPO, tmp / "celery-stack", {"PATIENTINSIGHT_MODEL_CACHE_DIR": str(cache)})
    rows: list[dict[str, Any]] = []
    try:
        stack.wait_for_dag("patient_ingest")
        for workers in sorted({w for w, _ in POINTS}):
            for name in list(stack.workers):
                stack.stop_worker(name)
            threads = max(1, cores // workers)
            for n in range(workers):
                stack.start_worker(f"worker-{workers}-{n}", threads=threads)
            stack.wait_workers()
            pool = {"name": "embedding", "slots": workers, "include_deferred": False}
            stack.api("PATCH", "/api/v2/pools/embedding", pool)
            for per_worker in sorted(p for w, p in POINTS if w == workers):
                shards = workers * per_worker
                source = generated_source(tmp / f"celery-{workers}w{shards}.csv", records, tag=f"c{workers}w{shards}_")
                conf = {"source_uri": str(source), "shard_size": -(-records // shards), "max_mrr_drop": 1.0}
                started = time.perf_counter()
                run = stack.api("POST", f"{DAG}/dagRuns", {"logical_date": None, "conf": conf})
                done = stack.wait_for_run("patient_ingest", run["dag_run_id"], timeout_s=3600)
                wall = time.perf_counter() - started
                embeds = stack.embed_tasks("patient_ingest", run["dag_run_id"])
                report_file = stack.patientinsight_home / "lake" / "runs" / run_key(run["dag_run_id"]) / "report.json"
                report = json.loads(report_file.read_text())
                span = _seconds_between(min(t["start_date"] for t in embeds), max(t["end_date"] for t in embeds))
                task_sum = sum(float(t["duration"]) for t in embeds)
                encode = float(report["seconds"]["embed"])
                rows.append(
                    {
                        "workers": workers,
                        "threads_per_worker": threads,
                        "shards": len(embeds),
                        "hosts": len({t["hostname"] for t in embeds}),
                        "embedded": report["embedded"],
                        "run_s": round(_seconds_between(done["start_date"], done["end_date"]), 1),
                        "trigger_to_done_s": round(wall, 1),
                        "embed_span_s": round(span, 1),
                        "embed_task_sum_s": round(task_sum, 1),
                        "encode_s": round(encode, 1),
                        "task_minus_encode_per_shard_s": round((task_sum - encode) / len(embeds), 1),
                        "dispatch_s": round(_mean_dispatch_s(embeds), 1),
                        "records_per_s_run": round(report["embedded"] / max(wall, 1e-9), 1),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        stack.stop()
    return rows


class TreeMemory:
    """The largest resident process under each worker's process group, sampled every 0.25 s: (time, MiB)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for name, pid in self.roots.items():
                with contextlib.suppress(psutil.Error):
                    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
                    largest = max(_rss(p) for p in tree)
                    self.samples[name].append((now, largest / 2**20))
            self._stop.wait(0.25)

    def peak(self, host: str, start: str, end: str) -> float | None:
        first, last = datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp()
        inside = [mib for t, mib in self.samples.get(host, []) if first <= t <= last]
        return round(max(inside), 1) if inside else None

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def first_ingest(tmp: Path, records: int, workers: int = 2) -> dict[str, Any]:
    """One patient_ingest run of `records` realistic records into an empty index on `workers` Celery
    workers: the run's wall time, and per task instance its worker, wall time and peak resident memory."""
    sys.path.insert(0, str(REPO))
    from realistic_corpus import write_csv

    from tests.integration.celery_stack import CeleryStack, engine_unavailable

    reason = engine_unavailable()
    if reason:
        raise SystemExit(reason)
    source = write_csv(tmp / f"realistic-{records}.csv", records)
    stack = CeleryStack.start_celery(REPO, tmp / "celery-stack")
    try:
        stack.wait_for_dag("patient_ingest")
        threads = max(1, (os.cpu_count() or 1) // workers)
        for n in range(workers):
            stack.start_worker(f"worker-{n}", threads=threads)
        stack.wait_workers()
        stack.api(
            "PATCH", "/api/v2/pools/embedding", {"name": "embedding", "slots": workers, "include_deferred": False}
        )
        roots = {name: stack.processes[name].pid for name in stack.workers}
        with TreeMemory(roots) as memory:
            started = time.perf_counter()
            run = stack.api("POST", f"{DAG}/dagRuns", {"logical_date": None, "conf": {"source_uri": str(source)}})
            done = stack.wait_for_run("patient_ingest", run["dag_run_id"], timeout_s=4 * 3600)
            wall = time.perf_counter() - started
        path = f"{DAG}/dagRuns/{run['dag_run_id']}/taskInstances?limit=1000"
        tasks = sorted(stack.api("GET", path)["task_instances"], key=lambda t: t["start_date"] or "")
        report_file = stack.patientinsight_home / "lake" / "runs" / run_key(run["dag_run_id"]) / "report.json"
        report = json.loads(report_file.read_text())
    finally:
        stack.stop()
    rows = [
        {
            "task": t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""),
            "state": t["state"],
            "worker": t["hostname"],
            "wall_s": round(float(t["duration"] or 0), 1),
            "peak_rss_mib": memory.peak(t["hostname"], t["start_date"], t["end_date"]) if t["end_date"] else None,
        }
        for t in tasks
        if t["start_date"]
    ]
    return {
        "records": records,
        "workers": workers,
        "threads_per_worker": threads,
        "state": done["state"],
        "run_s": round(_seconds_between(done["start_date"], done["end_date"]), 1),
        "trigger_to_done_s": round(wall, 1),
        "embedded": report.get("embedded"),
        "indexed": report.get("indexed"),
        "published": report.get("published"),
        "encode_s": round(float(report["seconds"]["embed"]), 1),
        "tasks": rows,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | threads each | shards | workers used | DAG run s | embed span s | embed tasks, sum s "
        "| encoder s, all shards | task - encoder, per shard s | queued to started s | records/s (run) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['threads_per_worker']} | {r['shards']} | {r['hosts']} | {r['run_s']} | "
            f"{r['embed_span_s']} | {r['embed_task_sum_s']} | {r['encode_s']} | {r['task_minus_encode_per_shard_s']} | "
            f"{r['dispatch_s']} | {r['records_per_s_run']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000, help="new generated records per point")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--first-ingest", type=int, default=0, help="one first ingest of N realistic records")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.first_ingest:
        load = os.getloadavg()
        with tempfile.TemporaryDirectory() as tmp_name:
            first = first_ingest(Path(tmp_name), args.first_ingest)
        print(json.dumps({"machine": machine(), "date": stamp(), "load_before": load, **first}))
        return
    result: dict[str, Any] = {"machine": machine(), "date": stamp(), "records": args.records}
    started = datetime.now()
    with tempfile.TemporaryDirectory() as tmp_name:
        result["celery"] = celery_sweep(Path(tmp_name), args.records)
    result["total_s"] = round((datetime.now() - started).total_seconds())
    if args.json:
        print(json.dumps(result))
        return
    print(f"# scale, celery: {result['machine']}; {result['date']}; {args.records} records per point\n")
    print(table(result["celery"]))


if __name__ == "__main__":
    main()
