"""The records of one committed version as both readers see them: the per-record arrays every search
needs (uids, ages, sexes, chunk counts and starts), and what is read from records.parquet on demand.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from patientinsight.index.types import Exclusion, Filters


class VersionRecords:
    """Loaded once per reader: arrays, no frame and no content hashes (the ingest reads those on
    demand), so a serving process holds as little as it can. Position i is row i of records.parquet;
    record i owns chunks `starts[i]` to `starts[i] + counts[i]` of the version's vectors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        meta = pq.read_table(path / "records.parquet", columns=["uid", "age_years", "sex", "chunk_count"])
        self.counts = meta.column("chunk_count").to_numpy().astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.uids = np.asarray(meta.column("uid").to_pylist(), dtype=object)
        self.ages = meta.column("age_years").to_numpy(zero_copy_only=False).astype(np.float64)
        self.sexes = np.asarray(meta.column("sex").to_pylist(), dtype=object)
        self.chunks = int(self.counts.sum())
        self._position_of: dict[str, int] | None = None

    def count(self) -> int:
        return len(self.uids)

    def uid_at(self, position: int) -> str:
        return str(self.uids[position])

    def position_of(self) -> dict[str, int]:
        """uid -> position, built on first use (a serving process that never asks saves the dict)."""
        if self._position_of is None:
            self._position_of = {str(uid): i for i, uid in enumerate(self.uids)}
        return self._position_of

    def positions(self, uids: Iterable[str]) -> np.ndarray:
        """Positions of the given uids in this version; uids it does not hold are skipped."""
        position_of = self.position_of()
        found = (position_of.get(uid) for uid in uids)
        return np.fromiter((p for p in found if p is not None), dtype=np.int64)

    def hidden(self, exclude: Exclusion = (), filters: Filters | None = None) -> np.ndarray | None:
        """A mask of the records to keep out of sight (True = hidden): those excluded (by uid, or a
        mask made by this method for many uids at once) and those the filters rule out; None when
        none are."""
        allowed = filters.mask(self.ages, self.sexes) if filters else None
        if isinstance(exclude, np.ndarray):
            mask = exclude.copy() if allowed is None else exclude | ~allowed
            return mask if mask.any() else None
        positions = self.positions(exclude) if exclude else np.empty(0, np.int64)
        if allowed is None and len(positions) == 0:
            return None
        mask = np.zeros(self.count(), dtype=bool) if allowed is None else ~allowed
        mask[positions] = True
        return mask

    def top(self, record_scores: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """The k best (record position, score) pairs among the records the filters allow, best first:
        shared by every retriever, so filters mean the same everywhere."""
        if len(record_scores) == 0 or k <= 0:
            return []
        mask = filters.mask(self.ages, self.sexes) if filters else None
        if mask is not None:
            record_scores = np.where(mask, record_scores, -np.inf)
        k = min(k, int(np.isfinite(record_scores).sum()))
        if k == 0:
            return []
        top = np.argpartition(-record_scores, k - 1)[:k]
        top = top[np.argsort(-record_scores[top], kind="stable")]
        return [(int(i), float(record_scores[i])) for i in top]

    def hashes(self) -> dict[str, str]:
        """uid -> content hash, read from the lake (one file, two columns)."""
        table = pq.read_table(self.path / "records.parquet", columns=["uid", "content_hash"])
        return dict(zip(table.column("uid").to_pylist(), table.column("content_hash").to_pylist(), strict=True))

    def records(self, uids: list[str]) -> pd.DataFrame:
        """The stored records of these uids (all META_COLUMNS), in the order asked."""
        table = pd.read_parquet(self.path / "records.parquet", filters=[("uid", "in", list(uids))])
        return table.set_index("uid").reindex(uids).reset_index()


class AnsweredByRecords:
    """What a reader answers from its version's records alone (`self.meta`), the same for every backend:
    the embedded and the Pinecone readers differ only in how they score vectors."""

    meta: VersionRecords

    def count(self) -> int:
        return self.meta.count()

    def uid_at(self, position: int) -> str:
        return self.meta.uid_at(position)

    def positions(self, uids: Iterable[str]) -> np.ndarray:
        return self.meta.positions(uids)

    def hidden(self, exclude: Exclusion = (), filters: Filters | None = None) -> np.ndarray | None:
        return self.meta.hidden(exclude, filters)

    def top(self, record_scores: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        return self.meta.top(record_scores, k, filters)

    def hashes(self) -> dict[str, str]:
        return self.meta.hashes()

    def records(self, uids: list[str]) -> pd.DataFrame:
        return self.meta.records(uids)
