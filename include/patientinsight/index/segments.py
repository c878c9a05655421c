"""A version's records as segments: an immutable base plus small delta segments, as Lucene keeps an index.

A version folder holds `segments/<name>/` (records.parquet, records.arrow, the lexical index and, in the
embedded index, vectors.npy) and `deleted/<name>.npy` (the rows of that segment this version hides: deleted
or replaced by a newer segment). A segment is written once and never changed. A new version hard-links the
segments it keeps from its base (no copy: the files are shared until the last version holding them is
pruned) and adds one segment with what changed, so its cost on disk and in time grows with the change, not
the corpus. A size policy (`merge_plan`) merges segments before they pile up.

Row order: a version's positions are the live rows of its segments in the manifest's order, which is the
order a version built whole would have (the kept base rows, then the upserts).

A version of an earlier release has no `segments` in its manifest: it reads as one segment, its own folder.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from patientinsight.index.pages import open_mapped, unmap_pages
from patientinsight.index.types import STORED_RECORD

SEGMENTS_DIR, DELETED_DIR = "segments", "deleted"
RECORDS_FILE, ARROW_FILE = "records.parquet", "records.arrow"
COPY_ROWS = 10_000  # records read or written at a time
# The size policy: at most this many segments, and a segment whose hidden rows pass this share is
# rewritten (its dead rows would otherwise cost disk and scan time for ever).
MAX_SEGMENTS = 8
MAX_DEAD_SHARE = 0.2


@dataclass(frozen=True)
class Segment:
    name: str
    path: Path  # the folder holding records.parquet
    rows: int  # rows stored, live or not
    vectors: int  # chunk vectors stored (the embedded index; 0 where the vectors live elsewhere)
    dead: np.ndarray  # sorted rows of this segment the version hides

    @property
    def live(self) -> int:
        return self.rows - len(self.dead)

    def live_mask(self) -> np.ndarray:
        mask = np.ones(self.rows, dtype=bool)
        mask[self.dead] = False
        return mask

    @cached_property
    def table(self) -> pa.Table:
        """Every stored column of the segment, memory-mapped (records.arrow) where it exists: taking a few
        rows touches only their pages, so a serving process does not hold the texts. Otherwise (a version
        of an earlier release) read from the parquet file."""
        if self._mapped is not None:
            return ipc.open_file(pa.py_buffer(self._mapped)).read_all()
        return pq.read_table(self.path / RECORDS_FILE)

    @cached_property
    def _mapped(self) -> mmap.mmap | None:
        arrow = self.path / ARROW_FILE
        return open_mapped(arrow) if arrow.exists() else None

    @cached_property
    def _batches(self) -> tuple[list[pa.RecordBatch], np.ndarray]:
        batches = self.table.to_batches()
        return batches, np.cumsum([0, *(b.num_rows for b in batches)])

    def take(self, rows: np.ndarray, columns: list[str]) -> pa.Table:
        """These stored rows (in the order given) of `columns`, taken batch by batch: a take over the
        whole table would first join its batches into one copy of every text (seconds and hundreds of
        MB per call at 250,000 records), where a batch's own take reads only the rows' pages."""
        rows = np.asarray(rows, dtype=np.int64)
        batches, offsets = self._batches
        which = np.searchsorted(offsets, rows, side="right") - 1
        parts, order = [], []
        for i in np.unique(which):
            picked = np.flatnonzero(which == i)
            batch = batches[int(i)].select(columns).take(pa.array(rows[picked] - offsets[i]))  # a copy
            parts.append(pa.Table.from_batches([batch]))
            order.append(picked)
        if not parts:
            return self.table.select(columns).slice(0, 0)
        taken = in_asked_order(parts, order)
        if self._mapped is not None:
            unmap_pages(self._mapped)  # the pages read stay cached, out of this process (index.pages)
        return taken

    def column(self, name: str) -> pa.ChunkedArray:
        """One column of every stored row, read from the parquet file (cheap: one column)."""
        return pq.read_table(self.path / RECORDS_FILE, columns=[name]).column(name)


def in_asked_order(parts: list[pa.Table], order: list[np.ndarray]) -> pa.Table:
    """Rows taken in groups, back in the order asked: part i's rows were asked at positions order[i]. A
    single part asked in order is returned as it is (no second copy)."""
    if len(parts) == 1 and np.array_equal(order[0], np.arange(len(order[0]))):
        return parts[0].combine_chunks()
    joined = pa.concat_tables(parts).combine_chunks()  # small: only the rows taken
    return joined.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))


def segment_entry(name: str, rows: int, vectors: int) -> dict[str, Any]:
    return {"name": name, "records": rows, "vectors": vectors}


def version_segments(folder: Path, manifest: dict[str, Any]) -> list[Segment]:
    """The segments of the version in `folder`, in order, with the rows it hides in each."""
    entries = manifest.get("segments")
    if entries is None:  # an earlier release's version: records.parquet (and vectors.npy) in the folder
        rows = pq.ParquetFile(folder / RECORDS_FILE).metadata.num_rows
        return [Segment(".", folder, rows, int(manifest.get("vectors", 0) or 0), np.empty(0, np.int64))]
    segments = []
    for entry in entries:
        dead_file = folder / DELETED_DIR / f"{entry['name']}.npy"
        dead = np.load(dead_file) if dead_file.exists() else np.empty(0, np.int64)
        path = folder / SEGMENTS_DIR / entry["name"]
        segments.append(Segment(entry["name"], path, int(entry["records"]), int(entry["vectors"]), dead))
    return segments


def new_segment_name() -> str:
    return f"s{uuid.uuid4().hex[:16]}"


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one (same device), else a copy."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)


def link_segment(segment: Segment, staging: Path, name: str | None = None) -> Path:
    """The base's segment in the staged version, its files hard-linked (never copied or changed). A version
    of an earlier release (records in the version folder itself) gives only its records and vectors: its
    lexical index is of the old format and is built anew."""
    target = staging / SEGMENTS_DIR / (name or segment.name)
    if segment.name == ".":
        target.mkdir(parents=True)
        for file in (RECORDS_FILE, "vectors.npy"):
            if (segment.path / file).exists():
                _link_or_copy(str(segment.path / file), str(target / file))
    else:
        shutil.copytree(segment.path, target, copy_function=_link_or_copy)
    return target


def write_dead(staging: Path, name: str, rows: np.ndarray) -> None:
    if len(rows):
        (staging / DELETED_DIR).mkdir(exist_ok=True)
        np.save(staging / DELETED_DIR / f"{name}.npy", np.unique(rows).astype(np.int64))


def rows_of(segment: Segment, uids: Iterable[str]) -> np.ndarray:
    """The live rows of the segment holding any of these uids."""
    wanted = pa.array(sorted(set(uids)), type=pa.string())
    if len(wanted) == 0:
        return np.empty(0, np.int64)
    hit = np.asarray(pc.is_in(segment.column("uid"), value_set=wanted), dtype=bool)
    hit[segment.dead] = False
    return np.flatnonzero(hit).astype(np.int64)


def write_records_arrow(segment_dir: Path) -> None:
    """records.arrow beside records.parquet: the same rows uncompressed, to be memory-mapped by readers."""
    parquet = pq.ParquetFile(segment_dir / RECORDS_FILE)
    tmp = segment_dir / f".{ARROW_FILE}.tmp"
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, STORED_RECORD) as writer:
        for batch in parquet.iter_batches(batch_size=COPY_ROWS):
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=STORED_RECORD))
    tmp.replace(segment_dir / ARROW_FILE)


def merge_plan(segments: Sequence[Segment], added: int) -> int:
    """Where the segments to merge begin: all from this index on are rewritten into one (len(segments)
    when none are). Merging a suffix keeps the row order of a whole build. The policy: a segment whose
    hidden share passes MAX_DEAD_SHARE is rewritten with all after it; and with `added` new segments
    there are never more than MAX_SEGMENTS, the small tail merged first (Lucene's tiered merge in spirit:
    the big base is rewritten only when its own dead rows call for it)."""
    start = len(segments)
    for i, segment in enumerate(segments):
        if segment.rows and len(segment.dead) / segment.rows > MAX_DEAD_SHARE:
            start = i
            break
    if start + added > MAX_SEGMENTS:  # too many kept: fold the tail after the first into one
        start = min(start, 1)
    return start
