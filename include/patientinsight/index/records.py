"""The records of one committed version as both readers see them: the per-record arrays every search
needs (uids, ages, sexes, chunk counts and starts), and what is read from the segments' files on demand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from patientinsight.index.segments import RECORDS_FILE, Segment, in_asked_order, version_segments
from patientinsight.index.types import META_COLUMNS, STORED_RECORD, Exclusion, Filters
from patientinsight.index.versions import read_manifest


def largest(values: np.ndarray, n: int, stride: int = 32) -> np.ndarray:
    """Positions of the n largest values (ties at the edge: any of them), as argpartition gives them,
    in a third of its time on 250,000 scores: a threshold read off every `stride`-th value keeps the
    candidates to a few hundred, and is checked (at least n values reach it, so all the n largest do)."""
    if len(values) > stride * n:
        sample = values[::stride]
        threshold = np.partition(sample, len(sample) - 2 * (-(-n // stride)))[len(sample) - 2 * (-(-n // stride))]
        candidates = np.flatnonzero(values >= threshold)
        if len(candidates) >= n:
            picked = np.argpartition(values[candidates], len(candidates) - n)[len(candidates) - n :]
            return candidates[picked]
    return np.argpartition(values, len(values) - n)[len(values) - n :]


class VersionRecords:
    """Loaded once per reader: arrays, no frame and no content hashes (the ingest reads those on
    demand), so a serving process holds as little as it can. Position i is the version's i-th live row
    (index.segments: its segments' rows in order, less those it hides); record i owns chunks
    `starts[i]` to `starts[i] + counts[i]` of the version's chunks counted over live records, and
    `chunk_rows[i]` onwards of the chunks as stored (its segments' vectors one after the other)."""

    def __init__(self, path: Path, manifest: dict[str, Any] | None = None) -> None:
        self.path = path
        self.segments = version_segments(path, manifest if manifest is not None else read_manifest(path))
        columns = ["uid", "age_years", "sex", "chunk_count"]
        tables = [pq.read_table(s.path / RECORDS_FILE, columns=columns) for s in self.segments]
        live = [s.live_mask() for s in self.segments]
        # Stored rows and chunks of all segments, one after the other, and which of them are live.
        stored_counts = np.concatenate(
            [t.column("chunk_count").to_numpy().astype(np.int64) for t in tables] or [np.empty(0, np.int64)]
        )
        self.live_rows = np.flatnonzero(np.concatenate(live or [np.empty(0, bool)])).astype(np.int64)
        self.row_starts = (np.cumsum(stored_counts) - stored_counts).astype(np.int64)  # per stored row
        self.segment_rows = np.cumsum([0, *(s.rows for s in self.segments)]).astype(np.int64)
        self.stored_chunks = int(stored_counts.sum())
        self.counts = stored_counts[self.live_rows]
        self.starts = (np.cumsum(self.counts) - self.counts).astype(np.int64)
        self.chunk_rows = self.row_starts[self.live_rows]
        pick = [np.flatnonzero(mask) for mask in live]

        def gathered(name: str, convert: Any) -> np.ndarray:
            parts = [convert(t.column(name).take(pa.array(rows))) for t, rows in zip(tables, pick, strict=True)]
            return np.concatenate(parts) if parts else np.empty(0, dtype=object)

        self.uids = gathered("uid", lambda c: np.asarray(c.to_pylist(), dtype=object))
        self.ages = gathered("age_years", lambda c: c.to_numpy(zero_copy_only=False).astype(np.float64))
        self.sexes = gathered("sex", lambda c: np.asarray(c.to_pylist(), dtype=object))
        self.chunks = int(self.counts.sum())
        self._position_of: dict[str, int] | None = None

    def count(self) -> int:
        return len(self.uids)

    def uid_at(self, position: int) -> str:
        return str(self.uids[position])

    def located(self, positions: np.ndarray) -> list[tuple[Segment, np.ndarray, np.ndarray]]:
        """The positions by segment: (segment, rows in it, which of `positions` they are)."""
        rows = self.live_rows[np.asarray(positions, dtype=np.int64)]
        which = np.searchsorted(self.segment_rows, rows, side="right") - 1
        out = []
        for i in np.unique(which):
            picked = np.flatnonzero(which == i)
            out.append((self.segments[int(i)], rows[picked] - self.segment_rows[i], picked))
        return out

    def table(self, positions: np.ndarray, columns: list[str]) -> pa.Table:
        """These records' stored columns, in the order of `positions`: taken from the memory-mapped
        records.arrow of their segments, so only their pages are read."""
        positions = np.asarray(positions, dtype=np.int64)
        parts, order = [], []
        for segment, rows, picked in self.located(positions):
            parts.append(segment.take(rows, columns))
            order.append(picked)
        if not parts:
            return pa.table({c: pa.array([], type=STORED_RECORD.field(c).type) for c in columns})
        return in_asked_order(parts, order)

    def frame(self, columns: list[str]) -> pd.DataFrame:
        """These columns of every live record, in position order."""
        parts = [
            pq.read_table(s.path / RECORDS_FILE, columns=columns).filter(pa.array(s.live_mask())) for s in self.segments
        ]
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return pa.concat_tables(parts).to_pandas()

    def live_column(self, name: str) -> pa.ChunkedArray:
        """One column over the version's live records, in position order."""
        parts = [s.column(name).filter(pa.array(s.live_mask())) for s in self.segments]
        return pa.chunked_array([c for part in parts for c in part.chunks], type=STORED_RECORD.field(name).type)

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
        top = largest(record_scores, k)
        top = top[np.argsort(-record_scores[top], kind="stable")]
        return [(int(i), float(record_scores[i])) for i in top]

    def hashes(self) -> dict[str, str]:
        """uid -> content hash of the live records, read from the lake (two columns)."""
        frame = self.frame(["uid", "content_hash"])
        return dict(zip(frame["uid"].tolist(), frame["content_hash"].tolist(), strict=True))

    def records(self, uids: list[str], columns: Sequence[str] = META_COLUMNS) -> pd.DataFrame:
        """These columns (uid always among them) of the stored records of these uids, in the order asked;
        a uid the version does not hold gives a row of nulls."""
        columns = ["uid", *(c for c in columns if c != "uid")]
        positions = self.position_of()
        found = [(i, positions[u]) for i, u in enumerate(uids) if u in positions]
        table = self.table(np.array([p for _, p in found], dtype=np.int64), columns).to_pandas()
        if len(found) == len(uids):  # the usual case (a search's hits): the rows are the ones asked, in order
            return table
        table.index = [i for i, _ in found]
        return table.reindex(range(len(uids))).assign(uid=list(uids)).reset_index(drop=True)


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

    def records(self, uids: list[str], columns: Sequence[str] = META_COLUMNS) -> pd.DataFrame:
        return self.meta.records(uids, columns)

    def frame(self, columns: list[str]) -> pd.DataFrame:
        return self.meta.frame(columns)
