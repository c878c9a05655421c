"""The embed step, cut into shards: the plan's records in slices, each embedded by one task (or in
turn by the command line), and the shards' vectors read back in plan order for the build.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientinsight import progress
from patientinsight.embedding.encoder import Embedder
from patientinsight.index.types import EmbeddedBatch
from patientinsight.ingest.lake import Timer, read_json, write_json

log = logging.getLogger(__name__)


SHARDS_FILE = "shards.json"


def plan_shards(run_dir: Path, shard_size: int) -> list[dict[str, Any]]:
    """Cut the planned records into shards of at most `shard_size`: each an [start, stop) slice of
    the plan's embed list and the record parts it reads. The DAG maps one embed task over them.
    Starts the run's embeddings afresh, so a cleared run never mixes shards of two plans."""
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    plan = read_json(run_dir / "plan.json")
    names = [name for name, _ in plan["embed_parts"]]
    ends = list(accumulate(count for _, count in plan["embed_parts"]))  # where each part ends in the list
    starts = [0, *ends[:-1]]
    shards = []
    for number, start in enumerate(range(0, len(plan["embed"]), shard_size)):
        stop = min(start + shard_size, len(plan["embed"]))
        parts = [n for n, s, e in zip(names, starts, ends, strict=True) if s < stop and e > start]
        shards.append({"shard": number, "start": start, "stop": stop, "parts": parts})
    out_dir = run_dir / "embeddings"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    write_json(run_dir / SHARDS_FILE, {"shard_size": shard_size, "shards": shards})
    log.info(
        "%d records to embed in %d shards of at most %d", len(plan["embed"]), len(shards), shard_size,
        extra=progress.extra(progress.ShardsPlanned(len(plan["embed"]), len(shards), shard_size)),
    )  # fmt: skip
    return shards


def _shard_file(run_dir: Path, number: int, suffix: str) -> Path:
    return run_dir / "embeddings" / f"shard-{number:05d}{suffix}"


def embed_shard(run_dir: Path, embedder: Embedder, shard: dict[str, Any]) -> dict[str, Any]:
    """Embed one shard's records; its vectors (and a summary) go to embeddings/shard-N.*, written
    under a temporary name and renamed, so a retried or killed shard never leaves half a file."""
    plan = read_json(run_dir / "plan.json")
    uids = plan["embed"][shard["start"] : shard["stop"]]
    with Timer() as timer:
        frames = [pd.read_parquet(run_dir / "records" / name, columns=["uid", "text"]) for name in shard["parts"]]
        frame = pd.concat(frames, ignore_index=True).set_index("uid")
        missing = len(set(uids) - set(frame.index))
        if missing:  # the plan and the records disagree: a shard of another plan, or edited records
            raise RuntimeError(f"shard {shard['shard']}: {missing} planned records are not in {shard['parts']}")
        texts = frame.loc[uids, "text"].tolist()
        vectors, counts = embedder.embed_documents(texts)
        target = _shard_file(run_dir, shard["shard"], ".npz")
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.npz")
        np.savez(partial, uids=np.asarray(uids, dtype=str), vectors=vectors, counts=counts)
        partial.replace(target)
    result = {
        "shard": shard["shard"],
        "embedded": len(uids),
        "chunks": len(vectors),
        "seconds": timer.seconds,
        "records_per_s": len(uids) / timer.seconds if uids and timer.seconds else 0.0,
    }
    write_json(_shard_file(run_dir, shard["shard"], ".json"), result)
    log.info(
        "shard %d: embedded %d records (%.1f records/s)", shard["shard"], len(uids), result["records_per_s"],
        extra=progress.extra(progress.ShardEmbedded(shard["shard"], len(uids))),
    )  # fmt: skip
    return result


def embed_summary(run_dir: Path) -> dict[str, Any]:
    """The embed step's numbers, summed over the run's shards (seconds: encoder time, all shards)."""
    shards = read_json(run_dir / SHARDS_FILE)["shards"]
    results = [read_json(_shard_file(run_dir, s["shard"], ".json")) for s in shards]
    embedded = sum(r["embedded"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    return {
        "embedded": embedded,
        "chunks": sum(r["chunks"] for r in results),
        "shards": len(results),
        "seconds": seconds,
        "records_per_s": embedded / seconds if embedded and seconds else 0.0,
    }


def embedded_batches(run_dir: Path) -> Iterator[EmbeddedBatch]:
    """Each shard's vectors with their records, in plan order. A shard without vectors fails the
    build: a version is made of every planned record or not at all."""
    for shard in read_json(run_dir / SHARDS_FILE)["shards"]:
        vectors_file = _shard_file(run_dir, shard["shard"], ".npz")
        if not vectors_file.exists():
            raise FileNotFoundError(
                f"shard {shard['shard']} has no vectors ({vectors_file}): its embed task did not finish"
            )
        stored = np.load(vectors_file)
        uids = stored["uids"].tolist()
        wanted = [("uid", "in", uids)]
        frames = [pd.read_parquet(run_dir / "records" / name, filters=wanted) for name in shard["parts"]]
        frame = pd.concat(frames, ignore_index=True).set_index("uid").loc[uids].reset_index()
        yield EmbeddedBatch(frame, stored["vectors"], stored["counts"])
