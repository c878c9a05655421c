"""Writes a new embedded index version: the base's kept rows and the upserts streamed to disk, so
memory stays bounded by one batch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

from patientinsight.index.types import META_COLUMNS, STORED_RECORD, EmbeddedBatch, StagedExtras
from patientinsight.index.versions import BUILD_PREFIX, BuildClaim, VersionStore, new_version_id

COPY_ROWS = 10_000  # base records copied at a time


@dataclass
class EmbeddedBuilder:
    """Collects upserts and deletes against a base version, and writes a new version on commit.

    Memory stays bounded by one batch: each upsert goes straight to disk in a spill folder beside
    the versions (records to a parquet file, vectors to a raw float32 file), removed when the builder
    commits or is dropped; the commit streams the base's kept rows and then the upserts into the
    staged records.parquet and vectors.npy."""

    versions: VersionStore
    base: str | None
    manifest: dict[str, Any]
    _deletes: set[str] = field(default_factory=set)
    _upserted: set[str] = field(default_factory=set)
    _spill: tempfile.TemporaryDirectory[str] | None = None
    _spill_claim: BuildClaim | None = None
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

    def commit(self, staged_extras: StagedExtras | None = None) -> str:
        """Write the new version; `staged_extras` adds files built from its staged records.parquet (the
        lexical index, read there batch by batch, so the records never sit in memory as one frame)
        inside the staging folder, so they appear together with the vectors or not at all."""
        try:
            with self.versions.staging(self.base) as staging:
                manifest = self._write(staging)
                return self.versions.commit(staging, manifest, staged_extras)
        finally:
            if self._writer is not None:
                self._writer.close()
            if self._spill is not None:
                self._spill.cleanup()
            if self._spill_claim is not None:
                self._spill_claim.release()
            self._spill = self._writer = self._spill_claim = None

    def _write(self, staging: Path) -> dict[str, Any]:
        """records.parquet and vectors.npy of the new version, into `staging`; its manifest."""
        if self._writer is not None:
            self._writer.close()
        base_path = self.versions.path(self.base) if self.base is not None else None
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
        return {
            **self.manifest,
            "version": new_version_id(),
            "parent": self.base,
            "records": pq.ParquetFile(staging / "records.parquet").metadata.num_rows,
            "vectors": total,
            "created_at": datetime.now(UTC).isoformat(),
        }

    def _spill_dir(self) -> Path:
        if self._spill is None:
            self.versions.root.mkdir(parents=True, exist_ok=True)
            # Deleted on commit, or when an abandoned builder is collected (or at exit); a killed
            # build's is removed by the next one (VersionStore.remove_debris): the claim says it is ours.
            self._spill = tempfile.TemporaryDirectory(prefix=BUILD_PREFIX, dir=self.versions.root)
            self._spill_claim = BuildClaim(Path(self._spill.name))
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
