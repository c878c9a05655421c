"""The steps of patient_ingest as plain functions over a run folder in the lake (validate, profile,
plan, build, evaluate, gate, publish, report); the embedding shards are in `ingest.shards`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from patientinsight import progress
from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.identity import same_embedding
from patientinsight.evaluation import gate as publish_gate
from patientinsight.index.lexical import PLAIN_BM25, Bm25Params, lexical_index_hook
from patientinsight.index.types import VectorIndex
from patientinsight.ingest.lake import Timer, read_json, record_parts, write_json
from patientinsight.ingest.shards import embedded_batches
from patientinsight.ingest.sources import read_chunks
from patientinsight.ingest.validation import validate_chunk
from patientinsight.settings import Settings

log = logging.getLogger(__name__)


class QuarantineExceeded(RuntimeError):
    """More rows failed validation than the run allows; `report` holds the counts all the same."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def validate_source(
    source: str,
    run_dir: Path,
    chunk_rows: int,
    max_quarantine_ratio: float,
    limit: int | None = None,
    storage_options: dict[str, Any] | None = None,
    encoding: str = "utf-8",
) -> dict[str, Any]:
    """Read, normalize and validate the source (text in `encoding`); valid records go to records/, the
    rest to quarantine.jsonl with row, field and reason. Fails above the allowed quarantined share."""
    records_dir = run_dir / "records"
    shutil.rmtree(records_dir, ignore_errors=True)  # a retried task starts clean
    records_dir.mkdir(parents=True)
    seen: set[str] = set()
    read = indexed = quarantined = 0
    by_field: dict[str, int] = {}
    with Timer() as timer, (run_dir / "quarantine.jsonl").open("w", encoding="utf-8") as bad:
        for part, chunk in enumerate(_limited(read_chunks(source, chunk_rows, storage_options, encoding), limit)):
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
            log.info(
                "validated %d rows (%d valid, %d quarantined)", read, indexed, quarantined,
                extra=progress.extra(progress.RowsRead(read)),
            )  # fmt: skip
    if read != indexed + quarantined:  # the invariant every report promises
        raise AssertionError(f"rows read {read} != valid {indexed} + quarantined {quarantined}")
    ratio = quarantined / read if read else 0.0
    report = {
        "source": source,
        "encoding": encoding,
        "read": read,
        "valid": indexed,
        "quarantined": quarantined,
        "quarantine_ratio": ratio,
        "max_quarantine_ratio": max_quarantine_ratio,
        "quarantined_by_field": by_field,
        "seconds": timer.seconds,
    }
    write_json(run_dir / "validation.json", report)
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
    from patientinsight.ingest.profiling import profile_records

    with Timer() as timer:
        frames = []
        remaining = max_rows
        for part in record_parts(run_dir):
            if remaining <= 0:
                break
            frame = pd.read_parquet(part)
            frames.append(frame.head(remaining))
            remaining -= len(frames[-1])
        records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        paths = profile_records(records, run_dir, title=f"patient_ingest {run_dir.name}") if len(records) else {}
    return {"profiled_rows": len(records), "seconds": timer.seconds, **paths}


def plan_changes(run_dir: Path, index: VectorIndex, embedding: dict[str, Any], full_refresh: bool) -> dict[str, Any]:
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
        for part in record_parts(run_dir):
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
        "embedding": embedding,  # what the build's manifest records: no runtime is started to describe it again
    }
    write_json(run_dir / "plan.json", plan)
    summary = {"to_embed": len(embed), "unchanged": unchanged, "to_delete": len(deletes), "base": base}
    log.info("plan: %s", summary)
    return {**summary, "seconds": timer.seconds}


def _quarantine_uids(run_dir: Path) -> Iterator[dict[str, Any]]:
    with (run_dir / "quarantine.jsonl").open(encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            if entry.get("uid"):
                yield {"uid": entry["uid"]}


def build_version(
    run_dir: Path, index: VectorIndex, embedding: dict[str, Any], lexical: Bm25Params = PLAIN_BM25
) -> dict[str, Any]:
    """Stage a new index version: the base, minus deletes, with the embedded records upserted, and
    its lexical (BM25) index built from the same records."""
    plan = read_json(run_dir / "plan.json")
    if plan["base"] is not None and not plan["embed"] and not plan["delete"]:
        # Nothing changed: the published version already is the result; re-runs add no versions.
        reader = index.open(plan["base"])
        return {"version": plan["base"], "records": reader.count(), "seconds": 0.0}
    with Timer() as timer:
        builder = index.builder(plan["base"], manifest={**embedding, "run": run_dir.name})
        for batch in embedded_batches(run_dir):
            builder.upsert(batch)
        builder.delete(plan["delete"])
        # The lexical index is built from the staged records.parquet, a batch of rows at a time: the
        # version's records are never all in memory (250k records: docs/PERFORMANCE.md).
        version = builder.commit(staged_extras=lexical_index_hook(lexical))
    reader = index.open(version)
    log.info("staged index version %s with %d records", version, reader.count())
    return {"version": version, "records": reader.count(), "seconds": timer.seconds}


def evaluate_candidate(index: VectorIndex, version: str, embedder: Embedder, settings: Settings) -> dict[str, Any]:
    """Retrieval of the configured retriever on the new version, compared like with like for the
    gate (patientinsight.evaluation.gate): against the published version on their shared queries and
    candidates, and against BM25 on the version's own holdout queries; leave-one-out throughout."""
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


def gate_decision(evaluation: dict[str, Any], max_mrr_drop: float, min_queries: int) -> dict[str, Any]:
    """Publish on its own unless retrieval fell materially and beyond the per-query spread against
    the published version or BM25 (patientinsight.evaluation.gate.decide); then a person decides."""
    if "comparison" not in evaluation:
        reason = f"gate skipped: {evaluation.get('skipped', 'no evaluation')}"
        return {"needs_approval": False, "skipped": True, "reason": reason, "max_mrr_drop": max_mrr_drop}
    return publish_gate.decide(evaluation["comparison"], max_mrr_drop, min_queries)


def publish_version(index: VectorIndex, version: str) -> dict[str, Any]:
    with Timer() as timer:
        index.publish(version)
    log.info("published index version %s", version)
    return {"version": version, "seconds": timer.seconds}


def run_report(run_dir: Path, steps: dict[str, dict[str, Any]], index: VectorIndex) -> dict[str, Any]:
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
    write_json(run_dir / "report.json", report)
    return report
