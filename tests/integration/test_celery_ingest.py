"""patient_ingest's embedding shards on a real CeleryExecutor: PostgreSQL (metadata database and Celery
result backend), Redis (broker), api-server, scheduler, dag-processor, triggerer and two
`airflow celery worker` processes of concurrency 1, over 40 real PMC-Patients records in shards of 10.

1. The shards spread over both workers and the run's report adds up.
2. A worker SIGKILLed (its whole process group) while it runs a shard: the scheduler fails that try when
   its heartbeat stops (`[scheduler] task_instance_heartbeat_timeout`, 30 s here), the task's retries
   run it on the surviving worker, nothing is published before every shard is done, and the index equals
   the undisturbed run's: the same uids, and vectors to cosine >= 0.9999 (the default encoder runs in bf16
   here, whose vectors differ in the 4th decimal with the batch a text is encoded in, so not bit-equal).

Skipped, with the reason, where Redis (PATIENTINSIGHT_TEST_REDIS) or PostgreSQL
(PATIENTINSIGHT_TEST_POSTGRES) does not answer, or where the real records are absent.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.ingest.lake import run_key
from tests.integration.airflow_stack import ProgressDeadline
from tests.integration.celery_stack import CeleryStack, engine_unavailable

log = logging.getLogger(__name__)
pytestmark = [pytest.mark.integration, pytest.mark.realdata, pytest.mark.timeout(1800)]

DAG_ID = "patient_ingest"
RECORDS, SHARD_SIZE = 40, 10
WORKERS = ("worker-a", "worker-b")
VICTIM, SURVIVOR = WORKERS[1], WORKERS[0]


def warm_model_cache() -> None:
    """The encoder's export (PATIENTINSIGHT_MODEL_CACHE_DIR, shared with the stack) made once, here, so
    that the first shards do not all convert the model at the same time."""
    from patientinsight.embedding.encoder import make_embedder
    from patientinsight.settings import Settings

    make_embedder(Settings()).encode(["warm-up"])


@pytest.fixture(scope="module")
def celery(
    repo_root: Path, real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[CeleryStack]:
    reason = engine_unavailable()
    if reason:
        pytest.skip(reason)
    warm_model_cache()
    stack = CeleryStack.start_celery(repo_root, tmp_path_factory.mktemp("celery-stack"))
    failed_before = request.session.testsfailed
    try:
        for name in WORKERS:
            stack.start_worker(name)
        stack.wait_workers()
        stack.wait_for_dag(DAG_ID)
        pool = {"name": "embedding", "slots": len(WORKERS), "include_deferred": False}  # one shard per worker
        stack.api("PATCH", "/api/v2/pools/embedding", pool)
        yield stack
    except BaseException:
        stack.dump_logs()
        raise
    finally:
        if request.session.testsfailed > failed_before:
            stack.dump_logs()
        stack.stop()


def trigger(stack: CeleryStack, source: Path, run_id: str) -> str:
    conf = {"source_uri": str(source), "limit": RECORDS, "shard_size": SHARD_SIZE}
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
    return str(stack.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", body)["dag_run_id"])


def report_of(stack: CeleryStack, run_id: str) -> dict[str, Any]:
    path = stack.patientinsight_home / "lake" / "runs" / run_key(run_id) / "report.json"
    return dict(json.loads(path.read_text()))


def published_vectors(root: Path) -> tuple[str | None, dict[str, np.ndarray]]:
    """The published version of the index at `root` and each record's vectors (one per chunk), by uid."""
    index = EmbeddedIndex(root)
    version = index.published()
    if version is None:
        return None, {}
    reader = index.open(version)
    vectors = np.asarray(reader.vectors, dtype=np.float32)
    meta = reader.meta
    return version, {str(u): vectors[s : s + c] for u, s, c in zip(meta.uids, meta.starts, meta.counts, strict=True)}


def assert_report_adds_up(report: dict[str, Any]) -> None:
    assert report["read"] == RECORDS == report["indexed"] + report["quarantined"], report
    assert report["embedded"] == report["indexed"] and report["unchanged"] == report["deleted"] == 0, report
    assert report["published"], report


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture(scope="module")
def undisturbed(celery: CeleryStack, real_data_dir: Path) -> dict[str, Any]:
    """One run over the records with both workers up: its shards, its report, its published index."""
    started = time.perf_counter()
    run_id = trigger(celery, real_data_dir / "PMC-Patients-sample-1000.csv", "celery-undisturbed")
    celery.wait_for_run(DAG_ID, run_id, timeout_s=900)
    wall = time.perf_counter() - started
    version, vectors = published_vectors(celery.patientinsight_home / "index")
    return {
        "run_id": run_id,
        "wall_s": wall,
        "embeds": celery.embed_tasks(DAG_ID, run_id),
        "report": report_of(celery, run_id),
        "version": version,
        "vectors": vectors,
    }


def test_shards_run_on_both_celery_workers(celery: CeleryStack, undisturbed: dict[str, Any]) -> None:
    report, embeds = undisturbed["report"], undisturbed["embeds"]
    assert_report_adds_up(report)
    shards = -(-report["indexed"] // SHARD_SIZE)
    assert shards >= 4
    assert sorted(t["map_index"] for t in embeds) == list(range(shards))
    assert {t["state"] for t in embeds} == {"success"}
    assert {t["queue"] for t in embeds} == {celery.queue}  # sent through this stack's Celery queue
    hosts = {t["hostname"] for t in embeds}
    assert hosts == set(WORKERS), hosts  # the task instances' hostnames: both workers ran shards
    assert undisturbed["version"] == report["index_version"]
    assert len(undisturbed["vectors"]) == report["indexed"]  # every indexed record, published
    rate = report["embedded"] / sum(float(t["duration"]) for t in embeds)
    log.info(
        "undisturbed: %.1f s trigger to done; %d shards on %s; %.1f records per second of embed task",
        undisturbed["wall_s"],
        shards,
        sorted(hosts),
        rate,
    )


def test_a_worker_killed_mid_shard_is_retried_on_the_other(
    celery: CeleryStack, undisturbed: dict[str, Any], real_data_dir: Path, tmp_path: Path
) -> None:
    # The same records again, from scratch: the undisturbed run's index moves aside (nothing published).
    index_root = celery.patientinsight_home / "index"
    shutil.move(index_root, tmp_path / "undisturbed-index")
    started = time.perf_counter()
    run_id = trigger(celery, real_data_dir / "PMC-Patients-sample-1000.csv", "celery-worker-lost")
    killed: int | None = None
    early_publish: list[str] = []
    progress = ProgressDeadline(600)  # follows the tasks, not the clock: a loaded CI is slow, not wrong
    state = "queued"
    while state not in ("success", "failed") and not progress.stalled():
        progress.saw(celery.task_progress(DAG_ID, run_id))
        embeds = celery.embed_tasks(DAG_ID, run_id)
        if killed is None:
            running = [t for t in embeds if t["state"] == "running" and t["hostname"] == VICTIM]
            if running:
                killed = int(running[0]["map_index"])
                celery.kill_worker(VICTIM)
        version = EmbeddedIndex(index_root).published()
        if version is not None and {t["state"] for t in embeds} != {"success"}:
            early_publish.append(f"{version} published while shards were {[t['state'] for t in embeds]}")
        state = celery.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        time.sleep(0.5)
    wall = time.perf_counter() - started
    assert state == "success", celery.run_diagnostics(DAG_ID, run_id)
    assert killed is not None, "no shard ran on the victim worker"
    assert early_publish == []

    # The lost shard: its first try ran on the victim and failed (no heartbeat), a later one succeeded
    # on the survivor.
    tries = sorted(celery.tries(DAG_ID, run_id, "embed", killed), key=lambda t: t["try_number"])
    assert tries[0]["hostname"] == VICTIM and tries[0]["state"] == "failed", tries
    assert tries[-1]["hostname"] == SURVIVOR and tries[-1]["state"] == "success", tries
    embeds = celery.embed_tasks(DAG_ID, run_id)
    assert {t["state"] for t in embeds} == {"success"}
    build = celery.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/build")
    assert _time(build["start_date"]) >= max(_time(t["end_date"]) for t in embeds)

    report = report_of(celery, run_id)
    assert_report_adds_up(report)
    version, vectors = published_vectors(index_root)
    assert version == report["index_version"]
    expected = undisturbed["vectors"]
    assert sorted(vectors) == sorted(expected)
    lowest = 1.0
    for uid, rows in vectors.items():
        assert rows.shape == expected[uid].shape, uid
        cosines = np.sum(rows * expected[uid], axis=1) / (
            np.linalg.norm(rows, axis=1) * np.linalg.norm(expected[uid], axis=1)
        )
        lowest = min(lowest, float(cosines.min()))
    assert lowest >= 0.9999, lowest
    log.info(
        "worker lost: shard %d killed on %s, %d tries; %.1f s trigger to done; lowest cosine %.6f",
        killed,
        VICTIM,
        len(tries),
        wall,
        lowest,
    )
