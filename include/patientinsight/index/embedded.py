"""The embedded vector index: each segment's vectors in a vectors.npy beside its records in the lake
(index.segments), searched exactly.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from patientinsight.index.embedded_builder import VECTORS_FILE, EmbeddedBuilder
from patientinsight.index.records import AnsweredByRecords, VersionRecords
from patientinsight.index.types import Exclusion, Filters, Hit
from patientinsight.index.versions import VersionStore, read_manifest


class EmbeddedIndex:
    """Versions under `root/versions/<id>/` (segments/, deleted/, lexical.json, manifest.json);
    `root/CURRENT` names the published one (index.versions keeps both)."""

    def __init__(self, root: Path, keep_versions: int = 5) -> None:
        self.versions = VersionStore(root, keep_versions)
        self.root = self.versions.root
        self.versions_dir = self.versions.versions_dir

    def published(self) -> str | None:
        return self.versions.published()

    def manifest(self, version: str) -> dict[str, Any]:
        return self.versions.manifest(version)

    def open(self, version: str) -> EmbeddedReader:
        return EmbeddedReader(self.versions.path(version), version)

    def builder(self, base: str | None, manifest: dict[str, Any]) -> EmbeddedBuilder:
        return EmbeddedBuilder(self.versions, base, manifest)

    def publish(self, version: str) -> None:
        self.versions.publish(version)

    def hold(self, version: str) -> None:
        self.versions.hold(version)

    def release_hold(self, version: str) -> None:
        self.versions.release_hold(version)


_KEPT_SCANS = 16  # files whose last scan is kept (a version has at most 8 segments)


class _Vectors:
    """One segment's vectors.npy: memory-mapped for whole scans, read row by row (pread) for a few
    rows, so that a reranker's reads do not stay resident in the process."""

    _last: ClassVar[dict[tuple[int, ...], tuple[bytes, np.ndarray]]] = {}  # per file: see scan

    def __init__(self, path: Path) -> None:
        self.map = np.load(path, mmap_mode="r")
        self.dim = int(self.map.shape[1]) if self.map.ndim == 2 else 0
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = int(self.map.offset)
        info = os.fstat(self._fd)
        self._identity = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)  # an inode can be reused
        # Ask the kernel to read the file into its page cache now (asynchronously): a rerank's reads
        # then hit memory from the first queries on, and none of it counts in this process's RSS.
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_WILLNEED)
        weakref.finalize(self, os.close, self._fd)

    def scan(self, query: np.ndarray) -> np.ndarray:
        """Every stored vector's score for the query. The last scan's scores are kept per file (device and
        inode): a delta version and its base share their base segment's file (a hard link), so the gate,
        asking each version the same query in turn, reads 250,000 vectors once instead of twice."""
        asked = query.tobytes()
        last = _Vectors._last.get(self._identity)
        if last is not None and last[0] == asked:
            return last[1]
        scores = self.map @ query
        scores.flags.writeable = False
        if len(_Vectors._last) >= _KEPT_SCANS:
            _Vectors._last.clear()  # one call: safe beside other threads
        _Vectors._last[self._identity] = (asked, scores)
        return scores

    def rows(self, rows: np.ndarray) -> np.ndarray:
        size = self.dim * 4
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for i, row in enumerate(rows.tolist()):
            out[i] = np.frombuffer(os.pread(self._fd, size, self._offset + row * size), dtype=np.float32)
        return out


class EmbeddedReader(AnsweredByRecords):
    """A read-only view of one committed version: record metadata loaded once (index.records), the
    vectors on disk."""

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self.manifest: dict[str, Any] = read_manifest(path)
        self.meta = VersionRecords(path, self.manifest)
        self._vectors = [_Vectors(s.path / VECTORS_FILE) for s in self.meta.segments]
        self._first_chunk = np.cumsum([0, *(len(v.map) for v in self._vectors)]).astype(np.int64)
        self._hides = len(self.meta.live_rows) != self.meta.segment_rows[-1]
        self._live_chunks: np.ndarray | None = None

    def _stored_chunks(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored chunk rows of the records at these positions, and where each record's begin."""
        counts = self.meta.counts[positions]
        firsts = np.cumsum(counts) - counts  # where each record's chunks begin in the gathered rows
        rows = np.repeat(self.meta.chunk_rows[positions] - firsts, counts) + np.arange(int(counts.sum()))
        return rows, firsts

    @property
    def vectors(self) -> np.ndarray:
        """Every live chunk's vector in position order, read into memory (for tools and tests: a whole
        corpus's vectors)."""
        if self.count() == 0:
            return np.empty((0, int(self.manifest.get("dim", 0))), dtype=np.float32)
        stored = np.concatenate([np.asarray(v.map) for v in self._vectors if len(v.map)])
        return stored[self._stored_chunks(np.arange(self.count()))[0]] if self._hides else stored

    # Dense scores, from the vectors on disk.
    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's score (its best chunk's cosine), and every chunk's score (live records' chunks,
        in position order)."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        query = np.asarray(vector, dtype=np.float32)
        stored = np.concatenate([v.scan(query) for v in self._vectors if len(v.map)])
        if not self._hides:
            return np.maximum.reduceat(stored, self.meta.starts), stored
        if self._live_chunks is None:
            self._live_chunks = self._stored_chunks(np.arange(self.count()))[0]
        chunk_scores = stored[self._live_chunks]
        return np.maximum.reduceat(chunk_scores, self.meta.starts), chunk_scores

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The scores of the records at these positions only (their best chunk's cosine): a reranker
        reads a few hundred vectors instead of scanning them all."""
        if len(positions) == 0:
            return np.empty(0, np.float32)
        rows, firsts = self._stored_chunks(positions)
        segment = np.searchsorted(self._first_chunk, rows, side="right") - 1
        gathered = np.empty(len(rows), dtype=np.float32)
        query = np.asarray(vector, dtype=np.float32)
        for i in np.unique(segment).tolist():
            picked = np.flatnonzero(segment == i)
            local = rows[picked] - self._first_chunk[i]
            order = np.argsort(local)  # read the file front to back
            gathered[picked[order]] = self._vectors[i].rows(local[order]) @ query
        return np.maximum.reduceat(gathered, firsts)

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()) -> list[Hit]:
        best, chunk_scores = self.scores(vector)
        hidden = self.hidden(exclude, filters)  # the filters too: `top` need not apply them again
        if hidden is not None:
            best = np.where(hidden, -np.inf, best)
        hits = []
        starts, counts = self.meta.starts, self.meta.counts
        for i, score in self.top(best, k):
            chunks = chunk_scores[starts[i] : starts[i] + counts[i]]
            hits.append(Hit(self.uid_at(i), score, int(np.argmax(chunks))))
        return hits
