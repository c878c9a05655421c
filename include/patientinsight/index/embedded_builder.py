"""Writes a new embedded index version as segments (index.segments): the base's segments hard-linked,
the upserts streamed to disk into one new segment, so memory stays bounded by one batch and a version's
cost grows with the change, not the corpus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

from patientinsight.index.segments import (
    ARROW_FILE,
    COPY_ROWS,
    RECORDS_FILE,
    SEGMENTS_DIR,
    Segment,
    link_segment,
    merge_plan,
    new_segment_name,
    rows_of,
    segment_entry,
    version_segments,
    write_dead,
    write_records_arrow,
)
from patientinsight.index.spill import UPSERT_RECORDS, UPSERT_VECTORS, Spill, npy_layout, read_rows
from patientinsight.index.types import STORED_RECORD, EmbeddedBatch, StagedExtras
from patientinsight.index.versions import VersionStore, new_version_id, read_manifest

VECTORS_FILE = "vectors.npy"


@dataclass
class EmbeddedBuilder:
    """Collects upserts and deletes against a base version, and writes a new version on commit.

    Memory stays bounded by one batch: each upsert goes straight to disk in a spill folder beside
    the versions (index.spill), removed when the builder commits or is dropped. The commit links the
    base's segments into the staged version, hides the rows deleted or replaced, and writes the
    upserts as one new segment (with the segments the size policy merges, if any)."""

    versions: VersionStore
    base: str | None
    manifest: dict[str, Any]
    _deletes: set[str] = field(default_factory=set)
    _spill: Spill = field(init=False)

    def __post_init__(self) -> None:
        self._spill = Spill(self.versions.root)

    def upsert(self, batch: EmbeddedBatch) -> None:
        self._spill.write(batch)

    def delete(self, uids: list[str]) -> None:
        self._deletes.update(uids)

    def commit(self, staged_extras: StagedExtras | None = None) -> str:
        """Write the new version; `staged_extras` adds files built from the staged segments (the lexical
        index of the new segment, read batch by batch) inside the staging folder, so they appear together
        with the vectors or not at all."""
        try:
            with self.versions.staging(self.base) as staging:
                manifest = self._write(staging)
                return self.versions.commit(staging, manifest, staged_extras)
        finally:
            self._spill.drop()

    def _write(self, staging: Path) -> dict[str, Any]:
        """The new version's segments, into `staging`; its manifest."""
        spill = self._spill.finish()
        dim = self._spill.dim if self._spill.dim is not None else int(self.manifest.get("dim", 0))
        if self._spill.dim is None and self.base is not None:
            dim = int(self.versions.manifest(self.base).get("dim", dim))
        replaced = self._deletes | self._spill.uids
        written = write_segments(self.versions, self.base, staging, replaced, spill, dim, self._spill.vectors)
        return {
            **self.manifest,
            "version": new_version_id(),
            "parent": self.base,
            **written,
            "created_at": datetime.now(UTC).isoformat(),
        }


def write_segments(
    versions: VersionStore,
    base: str | None,
    staging: Path,
    replaced: set[str],
    spill: Path | None,
    dim: int,
    upserted_vectors: int = 0,
    with_vectors: bool = True,
) -> dict[str, Any]:
    """The segments of a new version into `staging`: the base's linked, with `replaced` uids hidden, and one
    new segment of what the size policy merges and the spilled upserts (`spill`: an index.spill folder
    with `upserted_vectors` rows, or None). `with_vectors=False`: no vectors.npy (vectors that
    live elsewhere: Pinecone's). The manifest's `segments`, `records` (live) and `vectors` (live, stored)."""
    base_path = versions.path(base) if base is not None else None
    segments = version_segments(base_path, read_manifest(base_path)) if base_path is not None else []
    segments = [
        dataclasses.replace(s, dead=np.union1d(s.dead, rows_of(s, replaced)).astype(np.int64)) for s in segments
    ]
    added = 1 if spill is not None else 0
    start = merge_plan(segments, added)
    entries = []
    for segment in segments[:start]:
        name = segment.name if segment.name != "." else new_segment_name()
        target = link_segment(segment, staging, name)
        if not (target / ARROW_FILE).exists():  # a base of an earlier release
            write_records_arrow(target)
        write_dead(staging, name, segment.dead)
        entries.append(segment_entry(name, segment.rows, segment.vectors))
    merged = segments[start:]
    if merged or added:
        name = new_segment_name()
        folder = staging / SEGMENTS_DIR / name
        rows, vectors = _write_segment(folder, merged, spill, upserted_vectors, dim if with_vectors else None)
        if rows:  # everything merged was hidden and nothing added: no segment
            entries.append(segment_entry(name, rows, vectors))
        else:
            shutil.rmtree(folder)
    live_records = sum(e["records"] for e in entries) - sum(len(s.dead) for s in segments[:start])
    live_vectors = sum(e["vectors"] for e in entries) - sum(_dead_vectors(s) for s in segments[:start])
    return {"segments": entries, "records": int(live_records), "vectors": int(live_vectors)}


def _write_segment(
    folder: Path, merged: list[Segment], spill: Path | None, upserted: int, dim: int | None
) -> tuple[int, int]:
    """One new segment: the live rows of the merged segments, then the upserts; (rows, vectors stored).
    `dim` None: records only (the vectors live elsewhere)."""
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as files:
        writer = files.enter_context(pq.ParquetWriter(folder / RECORDS_FILE, STORED_RECORD))
        matrix: IO[bytes] | None = None
        total = 0
        if dim is not None:
            total = sum(s.vectors - _dead_vectors(s) for s in merged) + upserted
            matrix = files.enter_context((folder / VECTORS_FILE).open("wb"))
            # The .npy header first, then the rows as they come: written, never held or mapped.
            header = {"descr": npy_format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
            npy_format.write_array_header_1_0(matrix, {**header, "shape": (total, dim)})
        for segment in merged:
            _copy_live(segment, dim or 0, writer, matrix)
        if spill is not None:
            _copy_upserts(spill, dim or 0, writer, matrix)
    write_records_arrow(folder)
    return pq.ParquetFile(folder / RECORDS_FILE).metadata.num_rows, total


def _dead_vectors(segment: Segment) -> int:
    if len(segment.dead) == 0:
        return 0
    counts = segment.column("chunk_count").to_numpy().astype(np.int64)
    return int(counts[segment.dead].sum())


def _copy_live(segment: Segment, dim: int, writer: pq.ParquetWriter, out: IO[bytes] | None) -> None:
    """A segment's live records and their vectors, COPY_ROWS records at a time."""
    live = segment.live_mask()
    start = source_row = 0
    matrix = segment.path / VECTORS_FILE
    offset, width = npy_layout(matrix) if dim and out is not None else (0, 0)
    for rows in pq.ParquetFile(segment.path / RECORDS_FILE).iter_batches(batch_size=COPY_ROWS):
        mask = live[start : start + rows.num_rows]
        chunk_mask = np.repeat(mask, rows.column("chunk_count").to_numpy().astype(np.int64))
        if dim and out is not None:
            read_rows(matrix, offset, width, source_row + np.flatnonzero(chunk_mask)).tofile(out)
        writer.write_batch(rows.filter(pa.array(mask)).cast(STORED_RECORD))
        start += rows.num_rows
        source_row += len(chunk_mask)


def _copy_upserts(spill: Path, dim: int, writer: pq.ParquetWriter, out: IO[bytes] | None) -> None:
    """The upserted records and their vectors, one written row group at a time."""
    source_row = 0
    parquet = pq.ParquetFile(spill / UPSERT_RECORDS)
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        n = int(pc.sum(table.column("chunk_count")).as_py() or 0)
        if out is not None:
            offset = source_row * dim * 4
            np.fromfile(spill / UPSERT_VECTORS, dtype=np.float32, count=n * dim, offset=offset).tofile(out)
        writer.write_table(table)
        source_row += n
