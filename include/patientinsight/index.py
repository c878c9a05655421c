"""The vector index: one small interface, and the embedded, versioned implementation on local disk.

A version is immutable once committed. Publishing replaces one pointer file with os.replace, so a
reader sees the old version or the new one, never half of one.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

# Columns every index version stores per record, beside its vectors.
META_COLUMNS = (
    "uid", "pmid", "title", "text", "age_years", "sex", "pub_date",
    "similar_patients", "relevant_articles", "content_hash",
)  # fmt: skip


@dataclass(frozen=True)
class Filters:
    """Optional restrictions on the cases a search may return."""

    age_min: float | None = None
    age_max: float | None = None
    sex: str | None = None

    def mask(self, age: np.ndarray, sex: np.ndarray) -> np.ndarray | None:
        """Boolean mask over records, or None when nothing is filtered."""
        keep = np.ones(len(age), dtype=bool)
        if self.age_min is not None:
            keep &= age >= self.age_min  # NaN ages compare False: unknown age fails an age filter
        if self.age_max is not None:
            keep &= age <= self.age_max
        if self.sex is not None:
            keep &= sex == self.sex.upper()
        return None if keep.all() else keep


@dataclass(frozen=True)
class Hit:
    uid: str
    score: float
    best_chunk: int  # index of the record's best-matching chunk, 0 for a single vector


@dataclass
class EmbeddedBatch:
    """Records (META_COLUMNS) and their vectors: record i owns `chunk_counts[i]` consecutive rows."""

    records: pd.DataFrame
    vectors: np.ndarray
    chunk_counts: np.ndarray

    def __post_init__(self) -> None:
        if len(self.records) != len(self.chunk_counts):
            raise ValueError("one chunk count per record is required")
        if int(self.chunk_counts.sum()) != len(self.vectors):
            raise ValueError("chunk counts must add up to the number of vectors")
        if len(self.chunk_counts) and int(self.chunk_counts.min()) < 1:
            raise ValueError("every record needs at least one vector")


class IndexReader(Protocol):
    version: str

    def count(self) -> int: ...
    def hashes(self) -> dict[str, str]: ...
    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]: ...
    def records(self, uids: list[str]) -> pd.DataFrame: ...


class VersionBuilder(Protocol):
    def upsert(self, batch: EmbeddedBatch) -> None: ...
    def delete(self, uids: list[str]) -> None: ...
    def commit(self, extras: Callable[[Path, pd.DataFrame], None] | None = None) -> str: ...


class VectorIndex(Protocol):
    """What the pipeline and the service need of any index (embedded here, Pinecone in production)."""

    def published(self) -> str | None: ...
    def open(self, version: str) -> IndexReader: ...
    def builder(self, base: str | None, manifest: dict[str, Any]) -> VersionBuilder: ...
    def publish(self, version: str) -> None: ...


class EmbeddedIndex:
    """Versions under `root/versions/<id>/` (records.parquet, vectors.npy, manifest.json);
    `root/CURRENT` names the published one."""

    def __init__(self, root: Path, keep_versions: int = 5) -> None:
        self.root = Path(root)
        self.keep_versions = keep_versions
        self.versions_dir = self.root / "versions"

    def published(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def open(self, version: str) -> EmbeddedReader:
        return EmbeddedReader(self.versions_dir / version, version)

    def builder(self, base: str | None, manifest: dict[str, Any]) -> EmbeddedBuilder:
        return EmbeddedBuilder(self, base, manifest)

    def manifest(self, version: str) -> dict[str, Any]:
        return dict(json.loads((self.versions_dir / version / "manifest.json").read_text()))

    def publish(self, version: str) -> None:
        if not (self.versions_dir / version / "manifest.json").exists():
            raise FileNotFoundError(f"index version {version} does not exist")
        pointer = self.root / "CURRENT"
        tmp = self.root / f".CURRENT.{uuid.uuid4().hex}"
        tmp.write_text(version + "\n")
        tmp.replace(pointer)  # atomic on POSIX: readers never see a partial pointer
        self._prune(keep=version)

    def _prune(self, keep: str) -> None:
        committed = sorted(p.name for p in self.versions_dir.iterdir() if not p.name.startswith("."))
        old = [v for v in committed if v != keep][: max(0, len(committed) - self.keep_versions)]
        for name in old:
            shutil.rmtree(self.versions_dir / name, ignore_errors=True)


class EmbeddedReader:
    """A read-only view of one committed version. Vectors are memory-mapped, metadata loaded once."""

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self.manifest = json.loads((path / "manifest.json").read_text())
        self._meta = pd.read_parquet(
            path / "records.parquet", columns=["uid", "age_years", "sex", "content_hash", "chunk_count"]
        )
        self.vectors = np.load(path / "vectors.npy", mmap_mode="r")
        counts = self._meta["chunk_count"].to_numpy(dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._uids = self._meta["uid"].to_numpy(dtype=object)
        self._age = self._meta["age_years"].to_numpy(dtype=np.float64)
        self._sex = self._meta["sex"].to_numpy(dtype=object)

    def count(self) -> int:
        return len(self._meta)

    def hashes(self) -> dict[str, str]:
        return dict(zip(self._meta["uid"], self._meta["content_hash"], strict=True))

    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's score (its best chunk's cosine), and every chunk's score."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        chunk_scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        return np.maximum.reduceat(chunk_scores, self._starts), chunk_scores

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        best, chunk_scores = self.scores(vector)
        hits = []
        for i, score in self.top(best, k, filters):
            start = self._starts[i]
            end = self._starts[i + 1] if i + 1 < len(self._starts) else len(chunk_scores)
            hits.append(Hit(str(self._uids[i]), score, int(np.argmax(chunk_scores[start:end]))))
        return hits

    def top(self, record_scores: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """The k best (record position, score) pairs among the records the filters allow, best first:
        shared by every retriever, so filters mean the same everywhere."""
        if len(record_scores) == 0 or k <= 0:
            return []
        mask = filters.mask(self._age, self._sex) if filters else None
        if mask is not None:
            record_scores = np.where(mask, record_scores, -np.inf)
        k = min(k, int(np.isfinite(record_scores).sum()))
        if k == 0:
            return []
        top = np.argpartition(-record_scores, k - 1)[:k]
        top = top[np.argsort(-record_scores[top], kind="stable")]
        return [(int(i), float(record_scores[i])) for i in top]

    def uid_at(self, position: int) -> str:
        return str(self._uids[position])

    def records(self, uids: list[str]) -> pd.DataFrame:
        """The stored records of these uids (all META_COLUMNS), in the order asked."""
        table = pd.read_parquet(self.path / "records.parquet", filters=[("uid", "in", list(uids))])
        return table.set_index("uid").reindex(uids).reset_index()


@dataclass
class EmbeddedBuilder:
    """Collects upserts and deletes against a base version, and writes a new version on commit."""

    index: EmbeddedIndex
    base: str | None
    manifest: dict[str, Any]
    _batches: list[EmbeddedBatch] = field(default_factory=list)
    _deletes: set[str] = field(default_factory=set)

    def upsert(self, batch: EmbeddedBatch) -> None:
        self._batches.append(batch)

    def delete(self, uids: list[str]) -> None:
        self._deletes.update(uids)

    def commit(self, extras: Callable[[Path, pd.DataFrame], None] | None = None) -> str:
        """Write the new version; `extras` adds files built from its records (the lexical index)
        inside the staging folder, so they appear together with the vectors or not at all."""
        frames: list[pd.DataFrame] = []
        vectors: list[np.ndarray] = []
        replaced = set(self._deletes)
        for batch in self._batches:
            replaced.update(batch.records["uid"])
        if self.base is not None:
            base_path = self.index.versions_dir / self.base
            base = pd.read_parquet(base_path / "records.parquet")
            base_vectors = np.load(base_path / "vectors.npy", mmap_mode="r")
            keep = ~base["uid"].isin(replaced).to_numpy()
            frames.append(base.loc[keep])
            vectors.append(np.asarray(base_vectors[np.repeat(keep, base["chunk_count"].to_numpy())]))
        for batch in self._batches:
            frame = batch.records.loc[:, list(META_COLUMNS)].copy()
            frame["chunk_count"] = batch.chunk_counts.astype(np.int64)
            frames.append(frame)
            vectors.append(np.asarray(batch.vectors, dtype=np.float32))
        records = (
            pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*META_COLUMNS, "chunk_count"])
        )
        dim = int(self.manifest.get("dim", 0))
        matrix = np.concatenate(vectors) if vectors else np.empty((0, dim), np.float32)

        version = datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%fZ")
        self.index.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.index.versions_dir / f".staging-{version}"
        staging.mkdir()
        records.to_parquet(staging / "records.parquet", index=False)
        np.save(staging / "vectors.npy", matrix.astype(np.float32, copy=False))
        manifest = {
            **self.manifest,
            "version": version,
            "parent": self.base,
            "records": len(records),
            "vectors": int(matrix.shape[0]),
            "created_at": datetime.now(UTC).isoformat(),
        }
        if extras is not None:
            extras(staging, records)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        staging.rename(self.index.versions_dir / version)  # a version appears whole or not at all
        return version
