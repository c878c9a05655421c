"""The index interface: the stored columns, filters, hits, embedded batches, and the Protocols that the
embedded and the Pinecone implementations satisfy (index.conformance has mypy check that they do).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa

from patientinsight.records.columns import RECORD_COLUMNS

# Columns every index version stores per record, beside its vectors: the whole normalized record.
META_COLUMNS = RECORD_COLUMNS


# Records a search must not see: their uids, or a boolean mask over the version's records (True =
# hidden) from `IndexReader.hidden`, for many uids at once.
Exclusion = Collection[str] | np.ndarray


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


# The one hook a commit takes: it adds files (the lexical index) to the staged version folder, reading
# the staged records.parquet batch by batch, so the files appear with the version or not at all.
StagedExtras = Callable[[Path], None]


@runtime_checkable
class IndexReader(Protocol):
    """One committed, immutable version: what the retrievers, the evaluation and the service read."""

    @property
    def version(self) -> str: ...
    @property
    def path(self) -> Path: ...  # the version's lake folder: segments/, lexical.json, manifest.json
    @property
    def manifest(self) -> dict[str, Any]: ...

    def count(self) -> int: ...
    def uid_at(self, position: int) -> str: ...
    def positions(self, uids: Iterable[str]) -> np.ndarray: ...
    def hidden(self, exclude: Exclusion = (), filters: Filters | None = None) -> np.ndarray | None: ...
    def hashes(self) -> dict[str, str]: ...
    def records(self, uids: list[str], columns: Sequence[str] = META_COLUMNS) -> pd.DataFrame: ...
    def frame(self, columns: list[str]) -> pd.DataFrame: ...  # these columns of every record, in order
    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray: ...
    def top(self, record_scores: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[int, float]]: ...
    def search(
        self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()
    ) -> list[Hit]: ...


@runtime_checkable
class VersionBuilder(Protocol):
    """Upserts and deletes against a base version; `commit` writes them as a new version."""

    def upsert(self, batch: EmbeddedBatch) -> None: ...
    def delete(self, uids: list[str]) -> None: ...
    def commit(self, staged_extras: StagedExtras | None = None) -> str: ...


@runtime_checkable
class VectorIndex(Protocol):
    """What the pipeline and the service need of any index (embedded here, Pinecone in production)."""

    def published(self) -> str | None: ...
    def manifest(self, version: str) -> dict[str, Any]: ...
    def open(self, version: str) -> IndexReader: ...
    def builder(self, base: str | None, manifest: dict[str, Any]) -> VersionBuilder: ...
    def publish(self, version: str) -> None: ...
    # A version the gate holds for a person: kept from pruning until published (approved) or released
    # (rejected); index.holds.
    def hold(self, version: str) -> None: ...
    def release_hold(self, version: str) -> None: ...


# The schema of records.parquet: fixed, so that every batch (and the base) is written alike.
STORED_RECORD = pa.schema(
    [
        *((name, pa.float64() if name == "age_years" else pa.string()) for name in META_COLUMNS),
        ("chunk_count", pa.int64()),
    ]
)
