"""A build's spill folder, as both builders keep it: each upsert goes straight to disk beside the versions
(its records to a parquet file, one row group a batch; its vectors appended to a raw float32 file), so a
build holds one batch at most, whatever its size. The commit reads the folder back (the embedded index
into a new segment, the Pinecone index into its requests); `read_rows` reads rows of such a file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from patientinsight.index.types import META_COLUMNS, STORED_RECORD, EmbeddedBatch
from patientinsight.index.versions import BUILD_PREFIX, BuildClaim
from patientinsight.records.columns import MAX_UID_CHARS

UPSERT_RECORDS, UPSERT_VECTORS = "upserts.parquet", "upserts.f32"


class Spill:
    """The upserts of one builder, in a claimed folder under `root` made by the first upsert."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uids: set[str] = set()  # the upserted records
        self.vectors = 0  # rows of UPSERT_VECTORS
        self.dim: int | None = None  # their width, from the first batch of 2-D vectors
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._claim: BuildClaim | None = None
        self._writer: pq.ParquetWriter | None = None

    @property
    def path(self) -> Path:
        if self._folder is None:
            self.root.mkdir(parents=True, exist_ok=True)
            # Deleted on commit, or when an abandoned builder is collected (or at exit); a killed build's
            # is removed by the next one (VersionStore.remove_debris): the claim says it is ours.
            self._folder = tempfile.TemporaryDirectory(prefix=BUILD_PREFIX, dir=self.root)
            self._claim = BuildClaim(Path(self._folder.name))
        return Path(self._folder.name)

    def write(self, batch: EmbeddedBatch) -> None:
        """The batch's records as one row group, its vectors appended; the batch itself is not kept."""
        refuse_long_uids(batch.records["uid"])
        frame = batch.records.loc[:, list(META_COLUMNS)].assign(chunk_count=batch.chunk_counts.astype(np.int64))
        table = pa.Table.from_pandas(frame, schema=STORED_RECORD, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path / UPSERT_RECORDS, STORED_RECORD)
        self._writer.write_table(table)
        vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        if self.dim is None and vectors.ndim == 2:
            self.dim = int(vectors.shape[1])
        with (self.path / UPSERT_VECTORS).open("ab") as f:
            vectors.tofile(f)
        self.vectors += len(vectors)
        self.uids.update(batch.records["uid"])

    def finish(self) -> Path | None:
        """The folder, its records file complete, to read back; None when nothing was upserted."""
        if self._writer is None:
            return None
        self._writer.close()
        return self.path

    def drop(self) -> None:
        """Remove the folder and let its claim go; the builder's upserts are gone."""
        if self._writer is not None:
            self._writer.close()
        if self._folder is not None:
            self._folder.cleanup()
        if self._claim is not None:
            self._claim.release()
        self._folder = self._writer = self._claim = None


def refuse_long_uids(uids: pd.Series) -> None:
    """Every upsert of either backend comes here. Validation quarantines such records first; this is the
    last line: a longer uid could not be asked about through the query API, nor be a Pinecone vector id."""
    too_long = (uids.astype("string").str.len() > MAX_UID_CHARS).fillna(False)
    if too_long.any():
        first = str(uids[too_long].iloc[0])
        raise ValueError(
            f"record uid of {len(first)} characters ({first[:40]!r}...): the index takes at most "
            f"{MAX_UID_CHARS}; {int(too_long.sum())} such record(s) in this batch"
        )


def read_rows(path: Path, offset: int, dim: int, rows: np.ndarray) -> np.ndarray:
    """Rows of a raw float32 matrix on disk (`offset` header bytes, `dim` wide), read into memory; the map is
    closed at once, so its pages stop counting as resident."""
    if len(rows) == 0:
        return np.empty((0, dim), dtype=np.float32)
    total = (path.stat().st_size - offset) // (4 * dim)
    matrix = np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=(total, dim))
    try:
        return np.array(matrix[rows], dtype=np.float32)
    finally:
        del matrix


def npy_layout(path: Path) -> tuple[int, int]:
    """(header bytes, width) of a 2-D .npy matrix, for `read_rows`."""
    mapped = np.load(path, mmap_mode="r")
    try:
        return int(mapped.offset), int(mapped.shape[1]) if mapped.ndim == 2 else 0
    finally:
        del mapped
