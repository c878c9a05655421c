"""The embedded vector index: each version's vectors in a vectors.npy beside its records in the lake,
searched exactly (a matrix-vector product over the memory-mapped file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patientinsight.index.embedded_builder import EmbeddedBuilder
from patientinsight.index.records import AnsweredByRecords, VersionRecords
from patientinsight.index.types import Exclusion, Filters, Hit
from patientinsight.index.versions import VersionStore, read_manifest


class EmbeddedIndex:
    """Versions under `root/versions/<id>/` (records.parquet, vectors.npy, lexical/, manifest.json);
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


class EmbeddedReader(AnsweredByRecords):
    """A read-only view of one committed version. Vectors are memory-mapped, record metadata loaded
    once (index.records)."""

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self.manifest: dict[str, Any] = read_manifest(path)
        self.vectors = np.load(path / "vectors.npy", mmap_mode="r")
        self.meta = VersionRecords(path)

    # Dense scores, from the vectors on disk.
    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's score (its best chunk's cosine), and every chunk's score."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        chunk_scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        return np.maximum.reduceat(chunk_scores, self.meta.starts), chunk_scores

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The scores of the records at these positions only (their best chunk's cosine): a reranker
        reads a few hundred vectors instead of scanning them all."""
        if len(positions) == 0:
            return np.empty(0, np.float32)
        counts = self.meta.counts[positions]
        firsts = np.cumsum(counts) - counts  # where each record's chunks begin in the gathered rows
        rows = np.repeat(self.meta.starts[positions] - firsts, counts) + np.arange(int(counts.sum()))
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
        starts, counts = self.meta.starts, self.meta.counts
        for i, score in self.top(best, k):
            chunks = chunk_scores[starts[i] : starts[i] + counts[i]]
            hits.append(Hit(self.uid_at(i), score, int(np.argmax(chunks))))
        return hits
