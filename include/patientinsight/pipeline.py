"""The steps of patient_ingest as plain functions over a run folder in the lake.

The DAG calls each step as its own task; `run_ingest` calls them in order for the command line.
Steps pass paths, never data: each reads what the previous one wrote under `run_dir`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientinsight.embedding import Embedder
from patientinsight.index import EmbeddedBatch, EmbeddedIndex
from patientinsight.lexical import PLAIN_BM25, Bm25Params, write_index_from_parquet
from patientinsight.settings import Settings
from patientinsight.sources import read_chunks
from patientinsight.validation import validate_chunk

log = logging.getLogger(__name__)


class QuarantineExceeded(RuntimeError):
    """More rows failed validation than the run allows; `report` holds the counts all the same."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def run_key(run_id: str) -> str:
    """A folder name from an Airflow run id (which may hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def make_embedder(settings: Settings) -> Embedder:
    return Embedder(
        settings.embedding_model,
        strategy=settings.embed_strategy,
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
        batch_size=settings.embed_batch_size,
        backend=settings.embedding_backend,
        threads=settings.embed_threads,
        cache_dir=settings.home / "models",
    )


def make_index(settings: Settings) -> EmbeddedIndex:
    """The configured index. The Pinecone index keeps the embedded index's lake layout (it subclasses
    it), so every step below works on either."""
    if settings.index_backend == "pinecone":
        from patientinsight.pinecone_index import PineconeIndex, PineconeOptions, resolve_credentials

        api_key, conn_host = resolve_credentials(settings.pinecone_conn_id or None)
        options = PineconeOptions(
            index_name=settings.pinecone_index_name,
            api_key=api_key,
            controller_host=settings.pinecone_host or conn_host,
            cloud=settings.pinecone_cloud,
            region=settings.pinecone_region,
            batch_size=settings.pinecone_batch_size,
            concurrency=settings.pinecone_concurrency,
            max_retries=settings.pinecone_max_retries,
            backoff_s=settings.pinecone_backoff_s,
            timeout_s=settings.pinecone_timeout_s,
            ready_timeout_s=settings.pinecone_ready_timeout_s,
        )
        return PineconeIndex(settings.index_dir, options, keep_versions=settings.keep_versions)
    return EmbeddedIndex(settings.index_dir, keep_versions=settings.keep_versions)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _record_parts(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "records").glob("part-*.parquet"))


@dataclass
class Timer:
    started: float = 0.0

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def validate_source(
    source: str,
    run_dir: Path,
    chunk_rows: int,
    max_quarantine_ratio: float,
    limit: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read, normalize and validate the source; valid records go to records/, the rest to
    quarantine.jsonl with row, field and reason. Fails above the allowed quarantined share."""
    records_dir = run_dir / "records"
    shutil.rmtree(records_dir, ignore_errors=True)  # a retried task starts clean
    records_dir.mkdir(parents=True)
    seen: set[str] = set()
    read = indexed = quarantined = 0
    by_field: dict[str, int] = {}
    with Timer() as timer, (run_dir / "quarantine.jsonl").open("w", encoding="utf-8") as bad:
        for part, chunk in enumerate(_limited(read_chunks(source, chunk_rows, storage_options), limit)):
            result = validate_chunk(chunk, source, seen)
            read += len(chunk.rows)
            indexed += len(result.valid)
            quarantined += len(result.quarantined)
            for entry in result.quarantined:
                bad.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                for error in entry["errors"]:
                    by_field[error["field"]] = by_field.get(error["field"], 0) + 1
            if len(result.valid):
                result.valid.to_parquet(records_dir / f"part-{part:05d}.parquet", index=False)
            log.info("validated %d rows (%d valid, %d quarantined)", read, indexed, quarantined)
    if read != indexed + quarantined:  # the invariant every report promises
        raise AssertionError(f"rows read {read} != valid {indexed} + quarantined {quarantined}")
    ratio = quarantined / read if read else 0.0
    report = {
        "source": source,
        "read": read,
        "valid": indexed,
        "quarantined": quarantined,
        "quarantine_ratio": ratio,
        "max_quarantine_ratio": max_quarantine_ratio,
        "quarantined_by_field": by_field,
        "seconds": timer.seconds,
    }
    _write_json(run_dir / "validation.json", report)
    for entry in _first_errors(run_dir / "quarantine.jsonl", 20):
        log.warning("quarantined %s row %s uid=%s: %s", source, entry["row"], entry["uid"], entry["errors"])
    if read == 0:
        raise QuarantineExceeded(f"{source}: no rows were read", report)
    if ratio > max_quarantine_ratio:
        raise QuarantineExceeded(
            f"{source}: {quarantined} of {read} rows quarantined ({ratio:.1%}), above the allowed "
            f"{max_quarantine_ratio:.1%}; see {run_dir / 'quarantine.jsonl'}",
            report,
        )
    return report


def _limited(chunks: Iterator[Any], limit: int | None) -> Iterator[Any]:
    remaining = limit
    for chunk in chunks:
        if remaining is not None:
            if remaining <= 0:
                return
            if len(chunk.rows) > remaining:
                chunk = type(chunk)(chunk.rows[:remaining], chunk.first_row)
            remaining -= len(chunk.rows)
        yield chunk


def _first_errors(path: Path, n: int) -> Iterator[dict[str, Any]]:
    """Quarantine entries without their raw rows: what a log may show (ids, fields, reasons)."""
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                return
            entry = json.loads(line)
            yield {"row": entry["row"], "uid": entry["uid"], "errors": entry["errors"]}


def profile_run(run_dir: Path, max_rows: int) -> dict[str, Any]:
    from patientinsight.profiling import profile_records

    with Timer() as timer:
        frames = []
        remaining = max_rows
        for part in _record_parts(run_dir):
            if remaining <= 0:
                break
            frame = pd.read_parquet(part)
            frames.append(frame.head(remaining))
            remaining -= len(frames[-1])
        records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        paths = profile_records(records, run_dir, title=f"patient_ingest {run_dir.name}") if len(records) else {}
    return {"profiled_rows": len(records), "seconds": timer.seconds, **paths}


def plan_changes(run_dir: Path, index: EmbeddedIndex, embedding: dict[str, Any], full_refresh: bool) -> dict[str, Any]:
    """Which records need embedding (new, or content hash changed) and which to delete."""
    with Timer() as timer:
        base = index.published()
        stored: dict[str, str] = {}
        if base is not None:
            same_model = same_embedding(index.manifest(base), embedding)
            # A different model or strategy makes every stored vector stale: re-embed all.
            stored = index.open(base).hashes() if same_model else {}
        embed: list[str] = []
        embed_parts: list[tuple[str, int]] = []  # (part, records to embed in it), in embed-list order
        unchanged = 0
        source_uids: set[str] = set()
        for part in _record_parts(run_dir):
            frame = pd.read_parquet(part, columns=["uid", "content_hash"])
            before = len(embed)
            for uid, digest in zip(frame["uid"], frame["content_hash"], strict=True):
                source_uids.add(uid)
                if stored.get(uid) == digest:
                    unchanged += 1
                else:
                    embed.append(uid)
            if len(embed) > before:
                embed_parts.append((part.name, len(embed) - before))
        deletes: list[str] = []
        if full_refresh and base is not None:
            quarantined = {e["uid"] for e in _quarantine_uids(run_dir)}
            published = index.open(base).hashes()
            deletes = sorted(set(published) - source_uids - quarantined)
    plan = {
        "base": base,
        "embed": embed,
        "embed_parts": embed_parts,
        "delete": deletes,
        "unchanged": unchanged,
        "full_refresh": full_refresh,
    }
    _write_json(run_dir / "plan.json", plan)
    summary = {"to_embed": len(embed), "unchanged": unchanged, "to_delete": len(deletes), "base": base}
    log.info("plan: %s", summary)
    return {**summary, "seconds": timer.seconds}


def _quarantine_uids(run_dir: Path) -> Iterator[dict[str, Any]]:
    with (run_dir / "quarantine.jsonl").open(encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            if entry.get("uid"):
                yield {"uid": entry["uid"]}


def same_embedding(manifest: dict[str, Any], embedding: dict[str, Any]) -> bool:
    """Whether a version's vectors were made as `embedding` would make them (else: re-embed)."""
    keys = ("model", "strategy", "chunk_tokens", "chunk_overlap", "max_seq_length", "dim")
    return all(manifest.get(k) == embedding.get(k) for k in keys)


SHARDS_FILE = "shards.json"


def plan_shards(run_dir: Path, shard_size: int) -> list[dict[str, Any]]:
    """Cut the planned records into shards of at most `shard_size`: each an [start, stop) slice of
    the plan's embed list and the record parts it reads. The DAG maps one embed task over them.
    Starts the run's embeddings afresh, so a cleared run never mixes shards of two plans."""
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    plan = _read_json(run_dir / "plan.json")
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
    _write_json(run_dir / SHARDS_FILE, {"shard_size": shard_size, "shards": shards})
    log.info("%d records to embed in %d shards of at most %d", len(plan["embed"]), len(shards), shard_size)
    return shards


def _shard_file(run_dir: Path, number: int, suffix: str) -> Path:
    return run_dir / "embeddings" / f"shard-{number:05d}{suffix}"


def embed_shard(run_dir: Path, embedder: Embedder, shard: dict[str, Any]) -> dict[str, Any]:
    """Embed one shard's records; its vectors (and a summary) go to embeddings/shard-N.*, written
    under a temporary name and renamed, so a retried or killed shard never leaves half a file."""
    plan = _read_json(run_dir / "plan.json")
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
    _write_json(_shard_file(run_dir, shard["shard"], ".json"), result)
    log.info("shard %d: embedded %d records (%.1f records/s)", shard["shard"], len(uids), result["records_per_s"])
    return result


def embed_summary(run_dir: Path) -> dict[str, Any]:
    """The embed step's numbers, summed over the run's shards (seconds: encoder time, all shards)."""
    shards = _read_json(run_dir / SHARDS_FILE)["shards"]
    results = [_read_json(_shard_file(run_dir, s["shard"], ".json")) for s in shards]
    embedded = sum(r["embedded"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    return {
        "embedded": embedded,
        "chunks": sum(r["chunks"] for r in results),
        "shards": len(results),
        "seconds": seconds,
        "records_per_s": embedded / seconds if embedded and seconds else 0.0,
    }


def embed_planned(run_dir: Path, embedder: Embedder, shard_size: int) -> dict[str, Any]:
    """Every shard in turn, in this process: the command line's path through the DAG's steps."""
    for shard in plan_shards(run_dir, shard_size):
        embed_shard(run_dir, embedder, shard)
    return embed_summary(run_dir)


def _embedded_batches(run_dir: Path) -> Iterator[EmbeddedBatch]:
    """Each shard's vectors with their records, in plan order. A shard without vectors fails the
    build: a version is made of every planned record or not at all."""
    for shard in _read_json(run_dir / SHARDS_FILE)["shards"]:
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


def build_version(
    run_dir: Path, index: EmbeddedIndex, embedding: dict[str, Any], lexical: Bm25Params = PLAIN_BM25
) -> dict[str, Any]:
    """Stage a new index version: the base, minus deletes, with the embedded records upserted, and
    its lexical (BM25) index built from the same records."""
    plan = _read_json(run_dir / "plan.json")
    if plan["base"] is not None and not plan["embed"] and not plan["delete"]:
        # Nothing changed: the published version already is the result; re-runs add no versions.
        reader = index.open(plan["base"])
        return {"version": plan["base"], "records": reader.count(), "seconds": 0.0}
    with Timer() as timer:
        builder = index.builder(plan["base"], manifest={**embedding, "run": run_dir.name})
        for batch in _embedded_batches(run_dir):
            builder.upsert(batch)
        builder.delete(plan["delete"])
        # The lexical index is built from the staged records.parquet, a batch of rows at a time: the
        # version's records are never all in memory (250k records: docs/PERFORMANCE.md).
        version = builder.commit(
            staged_extras=lambda folder: write_index_from_parquet(folder, folder / "records.parquet", lexical)
        )
    reader = index.open(version)
    log.info("staged index version %s with %d records", version, reader.count())
    return {"version": version, "records": reader.count(), "seconds": timer.seconds}


def evaluate_version(index: EmbeddedIndex, version: str, embedder: Embedder, settings: Settings) -> dict[str, Any]:
    """Retrieval of the configured retriever on the new version, compared like with like for the
    gate (patientinsight.gate): against the published version on their shared queries and
    candidates, and against BM25 on the version's own holdout queries; leave-one-out throughout."""
    from patientinsight import gate as publish_gate

    if settings.eval_max_queries == 0:
        return {"retriever": settings.retriever, "skipped": "evaluation is off (eval_max_queries=0)"}
    with Timer() as timer:
        published = index.published()
        reference = index.open(published) if published and published != version else None
        comparison = publish_gate.compare(index.open(version), reference, embedder, settings)
    result: dict[str, Any] = {f"eval_{k}": v for k, v in publish_gate.flat_metrics(comparison).items()}
    result.update({"retriever": settings.retriever, "comparison": comparison, "seconds": timer.seconds})
    log.info("evaluation of %s (%s): %s", version, settings.retriever, {k: v for k, v in result.items() if "mrr" in k})
    return result


def gate(evaluation: dict[str, Any], max_mrr_drop: float, min_queries: int) -> dict[str, Any]:
    """Publish on its own unless retrieval fell materially and beyond the per-query spread against
    the published version or BM25 (patientinsight.gate.decide); then a person decides."""
    from patientinsight import gate as publish_gate

    if "comparison" not in evaluation:
        reason = f"gate skipped: {evaluation.get('skipped', 'no evaluation')}"
        return {"needs_approval": False, "skipped": True, "reason": reason, "max_mrr_drop": max_mrr_drop}
    return publish_gate.decide(evaluation["comparison"], max_mrr_drop, min_queries)


def publish_version(index: EmbeddedIndex, version: str) -> dict[str, Any]:
    with Timer() as timer:
        index.publish(version)
    log.info("published index version %s", version)
    return {"version": version, "seconds": timer.seconds}


def run_report(run_dir: Path, steps: dict[str, dict[str, Any]], index: EmbeddedIndex) -> dict[str, Any]:
    """The run's counts in one place; read = indexed + quarantined always holds here. `index_version`
    is what readers see after the run: the new version, or the old one when the gate held it back."""
    validation, plan, embed, build = steps["validate"], steps["plan"], steps["embed"], steps["build"]
    published = index.published()
    report = {
        "read": validation["read"],
        "indexed": validation["valid"],
        "quarantined": validation["quarantined"],
        "embedded": embed["embedded"],
        "chunks": embed["chunks"],
        "unchanged": plan["unchanged"],
        "deleted": plan["to_delete"],
        "staged_version": build["version"],
        "index_version": published,
        "published": published == build["version"],
        "index_records": build["records"],
        "report_dir": str(run_dir),
        "seconds": {name: round(float(step.get("seconds", 0.0)), 3) for name, step in steps.items()},
        "evaluation": steps.get("evaluate", {}),
        "gate": steps.get("gate", {}),
    }
    assert report["read"] == report["indexed"] + report["quarantined"]
    _write_json(run_dir / "report.json", report)
    return report


REPORT_FILES = (
    "validation.json",
    "quarantine.jsonl",
    "profile.html",
    "profile.json",
    "plan.json",
    "shards.json",
    "report.json",
)


def report_files(run_dir: Path) -> list[Path]:
    """The reports a run leaves in its folder, in the order a reader wants them."""
    return [run_dir / name for name in REPORT_FILES]
