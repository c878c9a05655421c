"""Full size for real: the realistic corpus (benchmarks/realistic_corpus.py) ingested, served, and updated
with 100 new records, on one machine.

    python benchmarks/full_size.py --records 250000 --keep /tmp/full-250k --json
    python benchmarks/full_size.py --records 20000 --keep /tmp/full-20k --json   # a rehearsal

Phases:
1. corpus: N realistic records (real lengths, a growing vocabulary) and an update of 100 new ones;
2. seed: the whole first ingest (run_ingest, through benchmarks/scale_250k.py --phase seed) with a
   STAND-IN embedder: deterministic random unit vectors of the model's shape instead of running the model
   (embedding 250,000 texts takes about an hour here); everything else is real (validation, hashes,
   records, vectors, BM25, evaluation, publish). Query vectors in the service are the real model's;
3. serve: the real service (`patientinsight serve`, uvicorn) on that home with the default retriever:
   time to ready, 1,000 queries at concurrency 1 (short real-style queries: the first sentences of real
   records), its resident memory after them (anonymous and file-backed: the memory-mapped index), and
   requests/s at concurrency 16 beside a `lexical` replica;
4. update: `patientinsight ingest` of the 100 new records (the real default embedder) on the otherwise
   quiet machine, timed from the command's start until the service answers from the new version; what
   the new version added on disk;
5. switches under load: a rollback and a re-publish while the service answers two queries at a time:
   failed requests and the service's peak resident memory.
With `--index pinecone`: the seed, an unchanged re-run and the 100-record upload into the Pinecone
stand-in (tests/pinecone_standin.py, its own process) through benchmarks/scale_250k.py, in DIR/pinecone;
`pinecone_rerun_s` and `pinecone_update_100_s` are the whole `run_ingest` of each (no service).

DIR keeps the home, so the service can be started on it again. Prints one JSON object (--json) or the
table lines for docs/PERFORMANCE.md. No record text is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from _common import REAL_CSV, machine, stamp
from query_latency import rss_mb, run_level, start_service
from realistic_corpus import write_csv

from patientinsight.index.versions import VersionStore
from patientinsight.retrieval.passages import first_sentences

log = logging.getLogger("full_size")
MIB = 2**20
UPDATE = 100


def service_env(home: Path) -> dict[str, str]:
    return {
        "PATIENTINSIGHT_HOME": str(home),
        "PATIENTINSIGHT_MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
        "PATIENTINSIGHT_INDEX_POLL_S": "1",
    }


def memory(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak, and what of it is anonymous or file-backed."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def disk_mib(folder: Path, only_new: bool = False) -> float:
    """Bytes of the files in `folder`; with only_new, those no other version shares (one link)."""
    files = [p.stat() for p in folder.rglob("*") if p.is_file()]
    return round(sum(s.st_size for s in files if not only_new or s.st_nlink == 1) / MIB, 1)


def seed(source: Path, home: Path) -> dict[str, Any]:
    cmd = [sys.executable, "benchmarks/scale_250k.py", "--phase", "seed", "--source", str(source), "--home", str(home)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"seed failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def queries(n: int) -> list[str]:
    texts = pd.read_csv(REAL_CSV, usecols=["patient"])["patient"].astype(str)
    short = [first_sentences(t) for t in texts.sample(frac=1.0, random_state=3)]
    return (short * (-(-n // len(short))))[:n]


def serve(home: Path, retriever: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, float]:
    os.environ.update(env)
    started = time.perf_counter()
    process, url = start_service(home, retriever)
    return process, url, round(time.perf_counter() - started, 1)


class Load:
    """A steady stream of queries (two at a time) while the update runs; what each answer said."""

    def __init__(self, url: str, texts: list[str]) -> None:
        self.url, self.texts = url, texts
        self.answers: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            i = offset
            while not self.stop.is_set():
                body = {"text": self.texts[i % len(self.texts)], "k": 5, "generate": False}
                try:
                    response = client.post("/v1/query", json=body)
                    version = response.json().get("index_version") if response.status_code == 200 else None
                    self.answers.append((time.perf_counter(), response.status_code, version))
                except httpx.HTTPError:
                    self.answers.append((time.perf_counter(), 0, None))
                i += 2

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)


def served_at(url: str, version: str, started: float, timeout_s: float = 120) -> float | None:
    """Seconds from `started` until a query is answered from `version` (asked every 0.1 s)."""
    deadline = time.perf_counter() + timeout_s
    body = {"text": "fever and cough", "k": 1, "generate": False}
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.perf_counter() < deadline:
            if client.post("/v1/query", json=body).json().get("index_version") == version:
                return round(time.perf_counter() - started, 1)
            time.sleep(0.1)
    return None


def update(home: Path, source: Path, url: str, env: dict[str, str]) -> dict[str, Any]:
    """`patientinsight ingest` of the new records on a quiet machine, until the service answers from the
    version it published."""
    store = VersionStore(home / "index")
    before = store.published()
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "patientinsight.cli", "ingest", str(source), "--json"]
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    ingested = round(time.perf_counter() - started, 1)
    after = store.published()
    (home / "update.log").write_text(done.stderr)
    changed = after is not None and after != before
    return {
        "update_exit": done.returncode,
        "update_ingest_s": ingested,
        "update_100_s": served_at(url, after, started) if changed and after else None,
        "update_version": after,
        "update_disk_mib": disk_mib(store.path(after), only_new=True) if changed and after else None,
        "update_segments": len(store.manifest(after).get("segments", [])) if after else None,
    }


def switches_under_load(home: Path, url: str, pid: int, texts: list[str]) -> dict[str, Any]:
    """The service picks up a version switch while it answers two queries at a time: a rollback to the
    previous version, then the newest again (the publish path an ingest takes). Failed requests and the
    service's peak resident memory through both switches."""
    store = VersionStore(home / "index")
    newest, previous = store.committed()[-1], store.committed()[-2]
    peak = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], memory(pid)["VmRSS"])
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = []
    with Load(url, texts) as load:
        time.sleep(2)
        for version in (previous, newest):
            started = time.perf_counter()
            store.publish(version)
            seconds.append(served_at(url, version, started))
        time.sleep(2)
    sampling.set()
    sampler.join()
    return {
        "switch_requests": len(load.answers),
        "switch_failed": sum(1 for _, status, _ in load.answers if status != 200),
        "switch_pickup_s": seconds,
        "switch_peak_rss_mib": peak[0],
    }


def pinecone(folder: Path, records: int) -> dict[str, Any]:
    """Into the Pinecone stand-in, through benchmarks/scale_250k.py: the seed (stand-in vectors), the
    unchanged re-run (the real embedder: nothing may be embedded) and the upload of UPDATE new records."""
    from scale_250k import measure_250k

    folder.mkdir(parents=True, exist_ok=True)
    done = measure_250k(folder, records, index="pinecone", corpus="realistic", update=UPDATE)
    out = {"pinecone_rerun_s": done["rerun_s"], "pinecone_update_100_s": done["update_s"]}
    keys = ("seed_s", "seed_peak_rss_mb", "rerun_embedded", "rerun_eval_queries", "update_embedded",
            "update_vectors_written", "update_eval_queries", "update_published", "standin_peak_rss_mb")  # fmt: skip
    out.update({key: done[key] for key in keys})
    out.update({k: v for k, v in done.items() if k.startswith(("rerun_", "update_")) and k.endswith("_s")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=250_000)
    parser.add_argument("--keep", type=Path, required=True, help="folder kept: corpus, home, logs")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--index", choices=["embedded", "pinecone"], default="embedded", help="pinecone: the stand-in (see above)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-update", action="store_true", help="serve only (a kept home): no upload, no switches")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.keep.mkdir(parents=True, exist_ok=True)
    home = args.keep / "home"
    env = service_env(home)
    result: dict[str, Any] = {"machine": machine(), "date": stamp(), "records": args.records, "index": args.index}
    result["load_before"] = os.getloadavg()
    if args.index == "pinecone":
        result.update(pinecone(args.keep / "pinecone", args.records))
        result["load_after"] = os.getloadavg()
        print(json.dumps(result, indent=None if args.json else 2))
        return

    source, extra = args.keep / f"source-{args.records}.csv", args.keep / f"update-{UPDATE}.csv"
    started = time.perf_counter()
    if not source.exists():
        write_csv(source, args.records)
    held = VersionStore(home / "index")
    offset = int(held.manifest(str(held.published()))["records"]) if held.published() else args.records
    write_csv(extra, UPDATE, start=max(offset, args.records))  # new uids on every run over a kept home
    result["corpus_s"] = round(time.perf_counter() - started, 1)
    if VersionStore(home / "index").published() is None:
        seeded = seed(source, home)
        result.update({f"seed_{k}": v for k, v in seeded.items() if k in ("total_s", "peak_rss_mb", "indexed")})
        result["seed_steps"] = seeded.get("steps")
        result["stand_in_encoder_for_seed"] = True
    store = VersionStore(home / "index")
    first = store.published()
    assert first is not None
    result["version_disk_mib"] = disk_mib(store.path(first))
    texts = queries(args.queries)

    process, url, result["ready_s"] = serve(home, "hybrid_rerank", env)
    try:
        one = asyncio.run(run_level(url, texts, 1, args.queries))
        result.update({"p50_ms": round(one["p50"], 1), "p99_ms": round(one["p99"], 1), "errors_c1": one["errors"]})
        mem = memory(process.pid)
        result.update({"serve_rss_mib": mem["VmRSS"], "serve_rss_anon_mib": mem["RssAnon"]})
        result.update({"serve_rss_file_mib": mem["RssFile"], "serve_rss_tree_mib": round(rss_mb(process.pid), 1)})
        c16 = asyncio.run(run_level(url, texts, 16, 400))
        result["rps_c16"], result["errors_c16"] = round(c16["rps"], 1), c16["errors"]
        if not args.no_update:
            result.update(update(home, extra, url, env))
            result.update(switches_under_load(home, url, process.pid, texts))
    finally:
        process.terminate()
        process.wait(timeout=60)
    lexical, lexical_url, _ = serve(home, "lexical", env)
    try:
        result["lexical_rps_c16"] = round(asyncio.run(run_level(lexical_url, texts, 16, 400))["rps"], 1)
    finally:
        lexical.terminate()
        lexical.wait(timeout=60)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
