"""Small helpers shared by tests: edited copies of the sample, the real records, MLflow read-back, and the
Dockerfile's stages, and one-record versions of an index."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientinsight.index.types import META_COLUMNS, EmbeddedBatch


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


REAL_CSV = "PMC-Patients-sample-1000.csv"


def real_records(folder: Path, limit: int | None = None) -> pd.DataFrame:
    """The first `limit` real records, normalized and validated as the pipeline does."""
    from patientinsight.ingest.sources import read_chunks
    from patientinsight.ingest.validation import validate_chunk

    seen: set[str] = set()
    path = folder / REAL_CSV
    frames = [validate_chunk(chunk, str(path), seen).valid for chunk in read_chunks(str(path), 5000)]
    return pd.concat(frames, ignore_index=True).iloc[:limit].reset_index(drop=True)


def scrambled(sample: Path, out: Path) -> Path:
    """The sample with every summary moved to the next article's patient: the annotations stay, the
    texts no longer match them, so the published version's queries are answered much worse."""
    rows = read_rows(sample)
    texts = [r["patient"] for r in rows]
    shift = next(i for i, r in enumerate(rows) if r["PMID"] != rows[0]["PMID"])
    for i, row in enumerate(rows):
        row["patient"] = texts[(i + shift) % len(texts)]
    return write_rows(out, rows)


def changed_and_removed(sample: Path, out: Path) -> tuple[Path, str, str]:
    """The sample with one record's text changed and another record removed: (path, changed, removed)."""
    rows = read_rows(sample)
    changed, removed = rows[0]["patient_uid"], rows[1]["patient_uid"]
    rows[0] = {**rows[0], "patient": rows[0]["patient"] + " A follow-up visit a year later was normal."}
    rows = [r for r in rows if r["patient_uid"] != removed]
    return write_rows(out, rows), changed, removed


def mlflow_run(tracking_uri: str, run_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).get_run(run_id)


def dockerfile_stage(dockerfile: str, target: str) -> str:
    """The text of one build stage (`FROM ... AS target`) of a Dockerfile."""
    stages = re.split(r"(?m)^FROM ", dockerfile)
    return next(s for s in stages if re.match(rf"\S+ AS {target}\n", s))


def commit_version(
    index: Any, base: str | None, new: Any = None, deletes: tuple[str, ...] = (), *, manifest: dict[str, Any]
) -> str:
    """One version of any VectorIndex on `base`: the batch `new` upserted, `deletes` deleted, committed."""
    builder = index.builder(base, manifest)
    if new is not None:
        builder.upsert(new)
    builder.delete(list(deletes))
    return str(builder.commit())


def one_record(uid: str) -> EmbeddedBatch:
    """An embedded batch of one record, `uid`, with a 3-wide vector."""
    frame = pd.DataFrame({c: ["x"] for c in META_COLUMNS}).assign(uid=[uid], age_years=[40.0])
    return EmbeddedBatch(frame, np.ones((1, 3), np.float32), np.array([1]))


def one_record_version(index: Any, uid: str) -> str:
    """A version on the published one with the record `uid` added, committed (not published)."""
    builder = index.builder(index.published(), {"dim": 3})
    builder.upsert(one_record(uid))
    return str(builder.commit())
