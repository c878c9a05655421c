"""Writes a new embedded index version: the base's kept rows and the upserts streamed to disk, so
memory stays bounded by one batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

from patientinsight.index.types import META_COLUMNS, STORED_RECORD, EmbeddedBatch

if TYPE_CHECKING:
    from patientinsight.index.embedded import EmbeddedIndex

COPY_ROWS = 10_000  # base records copied at a time


@dataclass
class EmbeddedBuilder:
    """Collects upserts and deletes against a base version, and writes a new version on commit.

    Memory stays bounded by one batch: each upsert goes straight to disk in a spill folder beside
    the versions (records to a parquet file, vectors to a raw float32 file), removed when the builder
    commits or is dropped; the commit streams the base's kept rows and then the upserts into the
    staged records.parquet and vectors.npy."""

    index: EmbeddedIndex
    base: str | None
    manifest: dict[str, Any]
    _deletes: set[str] = field(default_factory=set)
    _upserted: set[str] = field(default_factory=set)
    _spill: tempfile.TemporaryDirectory[str] | None = None
    _writer: pq.ParquetWriter | None = None
    _upserted_vectors: int = 0
    _dim: int | None = None

    def upsert(self, batch: EmbeddedBatch) -> None:
        spill = self._spill_dir()
        frame = batch.records.loc[:, list(META_COLUMNS)].assign(chunk_count=batch.chunk_counts.astype(np.int64))
        table = pa.Table.from_pandas(frame, schema=STORED_RECORD, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(spill / "upserts.parquet", STORED_RECORD)
        self._writer.write_table(table)
        vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        if self._dim is None:
            self._dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        with (spill / "upserts.f32").open("ab") as f:
            vectors.tofile(f)
        self._upserted_vectors += len(vectors)
        self._upserted.update(batch.records["uid"])

    def delete(self, uids: list[str]) -> None:
        self._deletes.update(uids)

    def commit(
        self,
        extras: Callable[[Path, pd.DataFrame], None] | None = None,
        staged_extras: Callable[[Path], None] | None = None,
    ) -> str:
        """Write the new version; `extras` adds files built from its records (the lexical index)
        inside the staging folder, so they appear together with the vectors or not at all.
        `staged_extras` does the same from the staged folder alone (it reads records.parquet there
        batch by batch), so the records never sit in memory as one frame."""
        self.index.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.index.versions_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            version = self._write(staging, extras, staged_extras)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # nothing half-written stays behind
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
            if self._spill is not None:
                self._spill.cleanup()
            self._spill = self._writer = None
        return version

    def _write(
        self,
        staging: Path,
        extras: Callable[[Path, pd.DataFrame], None] | None,
        staged_extras: Callable[[Path], None] | None,
    ) -> str:
        if self._writer is not None:
            self._writer.close()
        base_path = self.index.versions_dir / self.base if self.base is not None else None
        keep = self._kept_base_rows(base_path)
        base_vectors = np.load(base_path / "vectors.npy", mmap_mode="r") if base_path is not None else None
        dim = self._dim if self._dim is not None else int(self.manifest.get("dim", 0))
        if base_vectors is not None and self._dim is None:
            dim = int(base_vectors.shape[1])
        kept_vectors = int(keep[1][keep[0]].sum()) if keep is not None else 0
        total = kept_vectors + self._upserted_vectors
        with (
            pq.ParquetWriter(staging / "records.parquet", STORED_RECORD) as writer,
            (staging / "vectors.npy").open("wb") as matrix,
        ):
            # The .npy header first, then the rows as they come: written, never held or mapped.
            header = {
                "descr": npy_format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": (total, dim),
            }
            npy_format.write_array_header_1_0(matrix, header)
            if base_path is not None and keep is not None and base_vectors is not None:
                _copy_base(base_path, keep[0], base_vectors, writer, matrix)
            if self._writer is not None:
                _copy_upserts(self._spill_dir(), dim, writer, matrix)

        version = datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%fZ")
        records_count = pq.ParquetFile(staging / "records.parquet").metadata.num_rows
        manifest = {
            **self.manifest,
            "version": version,
            "parent": self.base,
            "records": records_count,
            "vectors": total,
            "created_at": datetime.now(UTC).isoformat(),
        }
        if extras is not None:
            extras(staging, _read_records(staging / "records.parquet"))
        if staged_extras is not None:
            staged_extras(staging)
        if extras is not None or staged_extras is not None:
            _release_freed_memory()
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        staging.rename(self.index.versions_dir / version)  # a version appears whole or not at all
        return version

    def _spill_dir(self) -> Path:
        if self._spill is None:
            self.index.root.mkdir(parents=True, exist_ok=True)
            # Deleted on commit, or when an abandoned builder is collected (or at exit).
            self._spill = tempfile.TemporaryDirectory(prefix=".build-", dir=self.index.root)
        return Path(self._spill.name)

    def _kept_base_rows(self, base_path: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Which base records stay (not deleted, not replaced by an upsert), and every base record's
        chunk count; only these two columns are read."""
        if base_path is None:
            return None
        table = pq.read_table(base_path / "records.parquet", columns=["uid", "chunk_count"])
        replaced = pa.array(sorted(self._deletes | self._upserted), type=pa.string())
        keep = np.asarray(pc.invert(pc.is_in(table.column("uid"), value_set=replaced)), dtype=bool)
        return keep, table.column("chunk_count").to_numpy().astype(np.int64)


def _release_freed_memory() -> None:
    """Give the memory of the records just freed back to the system. Python frees them, but glibc
    keeps freed heap pages (and Arrow its pool) for reuse, so a 250,000-record build would leave
    ~1.5 GB resident into the steps after it (measured: benchmarks/scale_250k.py)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read_records(path: Path) -> pd.DataFrame:
    """records.parquet as one frame, converted COPY_ROWS at a time: reading it whole would hold the
    Arrow copy and the pandas copy of every text at once (twice the text, ~1.8 GB for 250,000)."""
    frames = [rows.to_pandas() for rows in pq.ParquetFile(path).iter_batches(batch_size=COPY_ROWS)]
    frame = pd.concat(frames, ignore_index=True) if frames else pq.read_table(path).to_pandas()
    pa.default_memory_pool().release_unused()  # hand the Arrow buffers back rather than keep them pooled
    return frame


def _read_rows(vectors: np.memmap, start: int, count: int) -> np.ndarray:
    """Rows [start, start + count) of a memory-mapped .npy, read into memory: pages of a long-lived
    map would count as resident until it closes."""
    dim = int(vectors.shape[1])
    data = np.fromfile(
        str(vectors.filename), dtype=np.float32, count=count * dim, offset=vectors.offset + start * dim * 4
    )
    return data.reshape(count, dim)


def _copy_base(base_path: Path, keep: np.ndarray, vectors: np.memmap, writer: pq.ParquetWriter, out: IO[bytes]) -> None:
    """The kept base records and their vectors, COPY_ROWS records at a time."""
    start = source_row = 0
    for rows in pq.ParquetFile(base_path / "records.parquet").iter_batches(batch_size=COPY_ROWS):
        mask = keep[start : start + rows.num_rows]
        chunk_mask = np.repeat(mask, rows.column("chunk_count").to_numpy().astype(np.int64))
        _read_rows(vectors, source_row, len(chunk_mask))[chunk_mask].tofile(out)
        writer.write_batch(rows.filter(pa.array(mask)).cast(STORED_RECORD))
        start += rows.num_rows
        source_row += len(chunk_mask)


def _copy_upserts(spill: Path, dim: int, writer: pq.ParquetWriter, out: IO[bytes]) -> None:
    """The upserted records and their vectors after the base's, one written row group at a time."""
    source_row = 0
    parquet = pq.ParquetFile(spill / "upserts.parquet")
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        n = int(pc.sum(table.column("chunk_count")).as_py() or 0)
        offset = source_row * dim * 4
        np.fromfile(spill / "upserts.f32", dtype=np.float32, count=n * dim, offset=offset).tofile(out)
        writer.write_table(table)
        source_row += n
