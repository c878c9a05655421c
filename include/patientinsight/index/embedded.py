"""The embedded, versioned vector index on local disk, and its reader.

A version is immutable once committed. Publishing replaces one pointer file with os.replace, so a
reader sees the old version or the new one, never half of one.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from patientinsight.index.embedded_builder import EmbeddedBuilder
from patientinsight.index.types import Exclusion, Filters, Hit


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
        self.vectors = np.load(path / "vectors.npy", mmap_mode="r")
        self._load_meta()

    def _load_meta(self) -> None:
        """What every search needs per record, as arrays: no frame, no content hashes (the ingest
        reads those on demand), so a serving process holds as little as it can."""
        meta = pq.read_table(self.path / "records.parquet", columns=["uid", "age_years", "sex", "chunk_count"])
        counts = meta.column("chunk_count").to_numpy().astype(np.int64)
        self._counts = counts
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._uids = np.asarray(meta.column("uid").to_pylist(), dtype=object)
        self._age = meta.column("age_years").to_numpy(zero_copy_only=False).astype(np.float64)
        self._sex = np.asarray(meta.column("sex").to_pylist(), dtype=object)
        self._position_of: dict[str, int] | None = None

    def count(self) -> int:
        return len(self._uids)

    def uid_at(self, position: int) -> str:
        return str(self._uids[position])

    def positions(self, uids: Iterable[str]) -> np.ndarray:
        """Row positions of the given uids in this version; uids it does not hold are skipped."""
        if self._position_of is None:
            self._position_of = {str(uid): i for i, uid in enumerate(self._uids)}
        found = (self._position_of.get(uid) for uid in uids)
        return np.fromiter((p for p in found if p is not None), dtype=np.int64)

    def hidden(self, exclude: Exclusion = (), filters: Filters | None = None) -> np.ndarray | None:
        """A mask of the records to keep out of sight (True = hidden): those excluded (by uid, or a
        mask made by this method for many uids at once) and those the filters rule out; None when
        none are."""
        allowed = filters.mask(self._age, self._sex) if filters else None
        if isinstance(exclude, np.ndarray):
            mask = exclude.copy() if allowed is None else exclude | ~allowed
            return mask if mask.any() else None
        positions = self.positions(exclude) if exclude else np.empty(0, np.int64)
        if allowed is None and len(positions) == 0:
            return None
        mask = np.zeros(self.count(), dtype=bool) if allowed is None else ~allowed
        mask[positions] = True
        return mask

    def hashes(self) -> dict[str, str]:
        table = pq.read_table(self.path / "records.parquet", columns=["uid", "content_hash"])
        return dict(zip(table.column("uid").to_pylist(), table.column("content_hash").to_pylist(), strict=True))

    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's score (its best chunk's cosine), and every chunk's score."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        chunk_scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        return np.maximum.reduceat(chunk_scores, self._starts), chunk_scores

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The scores of the records at these positions only (their best chunk's cosine): a reranker
        reads a few hundred vectors instead of scanning them all."""
        if len(positions) == 0:
            return np.empty(0, np.float32)
        counts = self._counts[positions]
        firsts = np.cumsum(counts) - counts  # where each record's chunks begin in the gathered rows
        rows = np.repeat(self._starts[positions] - firsts, counts) + np.arange(int(counts.sum()))
        order = np.argsort(rows)  # read the memory map front to back
        gathered = np.empty(len(rows), dtype=np.float32)
        gathered[order] = np.asarray(self.vectors[rows[order]]) @ np.asarray(vector, dtype=np.float32)
        return np.maximum.reduceat(gathered, firsts)

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()) -> list[Hit]:
        best, chunk_scores = self.scores(vector)
        hidden = self.hidden(exclude, filters)  # the filters too: `top` need not apply them again
        if hidden is not None:
            best = np.where(hidden, -np.inf, best)
        hits = []
        for i, score in self.top(best, k):
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

    def records(self, uids: list[str]) -> pd.DataFrame:
        """The stored records of these uids (all META_COLUMNS), in the order asked."""
        table = pd.read_parquet(self.path / "records.parquet", filters=[("uid", "in", list(uids))])
        return table.set_index("uid").reindex(uids).reset_index()
