"""Commits a Pinecone index version: a namespace of its own (the base's kept vectors copied, the upserts
written), counted complete before its folder appears in the lake (index.pinecone has the design).

Memory stays bounded as in the embedded builder (index.embedded_builder): each upsert goes straight
to a spill folder beside the versions (records to a parquet file, vectors to a raw float32 file), and
the commit streams the base's kept records and the spilled ones into the staged records.parquet.
The requests are then sent from disk: each one reads its `batch_size` vectors when it is sent, so at
most `concurrency` requests' vectors are in memory at once, whatever the number of records. What is
held for the whole build is per record and small: the upserted uids (as the embedded builder holds
them) and, while the commit sends, the metadata columns of the vectors (uid, content hash, age, sex,
chunk count; never the text).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from patientinsight.index.pinecone_support import FETCH_IDS, PineconeIndexError, vector_id, vector_metadata
from patientinsight.index.segments import RECORDS_FILE, version_segments
from patientinsight.index.types import META_COLUMNS, STORED_RECORD, EmbeddedBatch, StagedExtras
from patientinsight.index.versions import BUILD_PREFIX, BuildClaim, new_version_id, read_manifest

if TYPE_CHECKING:
    from pinecone import Index

    from patientinsight.index.pinecone import PineconeIndex

log = logging.getLogger(__name__)

COPY_ROWS = 10_000  # base records copied into the staged records.parquet at a time
VECTOR_META = ("uid", "content_hash", "age_years", "sex", "chunk_count")  # what a vector's metadata needs
UPSERT_RECORDS, UPSERT_VECTORS = "upserts.parquet", "upserts.f32"  # the spill folder's files

Items = list[dict[str, Any]]


@dataclass
class _Part:
    """Records of the new version whose vectors come from one place, in staged order: `meta` holds their
    VECTOR_META columns, record i's vectors are rows `first_rows[i]`... of the raw float32 file `source`
    (after `offset` header bytes, `dim` wide), or, with no source, ids in the base `namespace`."""

    meta: pa.Table
    first_rows: np.ndarray
    source: Path | None = None
    offset: int = 0
    dim: int = 0
    namespace: str | None = None
    counts: np.ndarray = field(init=False)  # each record's chunk count
    ends: np.ndarray = field(init=False)  # the vector after each record's last, counted within the part

    def __post_init__(self) -> None:
        self.counts = self.meta.column("chunk_count").to_numpy().astype(np.int64)
        self.ends = np.cumsum(self.counts)

    @property
    def vectors(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def _locate(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, dict[str, list[Any]], int]:
        """For vectors [start, stop) of the part: each one's record, its chunk, and the records' columns."""
        wanted = np.arange(start, stop, dtype=np.int64)
        record = np.searchsorted(self.ends, wanted, side="right")
        chunk = wanted - (self.ends[record] - self.counts[record])
        first = int(record[0])
        columns = self.meta.slice(first, int(record[-1]) - first + 1).to_pydict()
        return record, chunk, columns, first

    def ids(self, start: int, stop: int) -> list[str]:
        record, chunk, columns, first = self._locate(start, stop)
        return [vector_id(str(columns["uid"][r - first]), int(c)) for r, c in zip(record, chunk, strict=True)]

    def items(self, start: int, stop: int) -> Items:
        """Vectors [start, stop) of the part as upsert items, their values read from `source` now."""
        assert self.source is not None
        record, chunk, columns, first = self._locate(start, stop)
        rows = self.first_rows[record] + chunk
        values = _read_rows(self.source, self.offset, self.dim, rows)
        out = []
        for i, (r, c) in enumerate(zip(record - first, chunk, strict=True)):
            uid = str(columns["uid"][r])
            out.append({
                "id": vector_id(uid, int(c)),
                "values": values[i].tolist(),
                "metadata": vector_metadata(
                    uid, int(c), columns["content_hash"][r], columns["age_years"][r], columns["sex"][r]
                ),
            })  # fmt: skip
        return out


def _read_rows(path: Path, offset: int, dim: int, rows: np.ndarray) -> np.ndarray:
    """Rows of a raw float32 matrix on disk, read into memory; the map is closed at once, so its pages
    stop counting as resident."""
    total = (path.stat().st_size - offset) // (4 * dim)
    matrix = np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=(total, dim))
    try:
        return np.array(matrix[rows], dtype=np.float32)
    finally:
        del matrix


class PineconeBuilder:
    """Collects upserts and deletes against a base version; the commit writes a new namespace (base
    minus deletes and replaced records, plus the upserts) and then the version folder in the lake.
    Upserts are spilled to disk, never held (see the module docstring)."""

    def __init__(self, index: PineconeIndex, base: str | None, manifest: dict[str, Any]) -> None:
        self.index = index
        self.base = base
        self.manifest = manifest
        self._deletes: set[str] = set()
        self._upserted: set[str] = set()
        self._spill: tempfile.TemporaryDirectory[str] | None = None
        self._spill_claim: BuildClaim | None = None
        self._writer: pq.ParquetWriter | None = None
        self._upserted_vectors = 0
        self._dim: int | None = None

    def upsert(self, batch: EmbeddedBatch) -> None:
        """Write the batch to the spill folder: its records as one row group, its vectors appended."""
        spill = self._spill_dir()
        frame = batch.records.loc[:, list(META_COLUMNS)].assign(chunk_count=batch.chunk_counts.astype(np.int64))
        table = pa.Table.from_pandas(frame, schema=STORED_RECORD, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(spill / UPSERT_RECORDS, STORED_RECORD)
        self._writer.write_table(table)
        vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        if self._dim is None and vectors.ndim == 2:
            self._dim = int(vectors.shape[1])
        with (spill / UPSERT_VECTORS).open("ab") as f:
            vectors.tofile(f)
        self._upserted_vectors += len(vectors)
        self._upserted.update(batch.records["uid"])

    def delete(self, uids: list[str]) -> None:
        self._deletes.update(uids)

    def commit(self, staged_extras: StagedExtras | None = None) -> str:
        """Write the new namespace, wait until Pinecone counts it whole, then let the version folder
        appear; `staged_extras` adds files (the lexical index) from the staged records.parquet, as in
        the embedded builder."""
        index, opts = self.index, self.index.options
        if self._writer is not None:
            self._writer.close()
        dim = int(self.manifest.get("dim", 0))
        version = new_version_id()
        namespace = version
        try:
            data = index.data_plane(dimension=dim)
        except BaseException:
            self._drop_spill()
            raise
        try:
            with index.versions.staging(self.base) as staging:
                parts = self._stage_records(staging / "records.parquet")
                vectors = sum(part.vectors for part in parts)
                records = sum(part.meta.num_rows for part in parts)
                tasks = [task for part in parts for task in self._tasks(part, namespace)]
                written = index.run_batches(tasks, f"upsert into {opts.index_name}/{namespace}")
                if written != vectors:
                    raise PineconeIndexError(f"wrote {written} vectors into {namespace}, expected {vectors}")
                self._wait_until_counted(data, namespace, vectors)
                del parts, tasks  # the metadata columns: not needed by the lexical index built next
                manifest = {
                    **self.manifest,
                    "backend": "pinecone",
                    "pinecone_index": opts.index_name,
                    "namespace": namespace,
                    "metric": "cosine",
                    "version": version,
                    "parent": self.base,
                    "records": records,
                    "vectors": vectors,
                    "created_at": datetime.now(UTC).isoformat(),
                }
                index.versions.commit(staging, manifest, staged_extras)
        except BaseException as exc:
            try:
                index.drop_namespace(namespace)
            except Exception as cleanup:  # the namespace is unreferenced either way; say so and go on
                log.warning("could not empty namespace %s after a failed commit: %s", namespace, cleanup)
            if isinstance(exc, PineconeIndexError):
                raise PineconeIndexError(
                    f"Pinecone index {opts.index_name}: version {version} not committed, nothing published: {exc}"
                ) from exc
            raise
        finally:
            self._drop_spill()
        log.info("committed version %s to Pinecone %s/%s: %d records", version, opts.index_name, namespace, records)
        return version

    # -- the spill folder ----------------------------------------------------------------------------
    def _spill_dir(self) -> Path:
        if self._spill is None:
            root = self.index.versions.root
            root.mkdir(parents=True, exist_ok=True)
            # Deleted on commit, or when an abandoned builder is collected (or at exit); a killed build's
            # is removed by the next one (VersionStore.remove_debris): the claim says it is ours.
            self._spill = tempfile.TemporaryDirectory(prefix=BUILD_PREFIX, dir=root)
            self._spill_claim = BuildClaim(Path(self._spill.name))
        return Path(self._spill.name)

    def _drop_spill(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._spill is not None:
            self._spill.cleanup()
        if self._spill_claim is not None:
            self._spill_claim.release()
        self._spill = self._writer = self._spill_claim = None

    # -- the staged records, and where each one's vectors come from -----------------------------------
    def _stage_records(self, path: Path) -> list[_Part]:
        """Write the new version's records.parquet (the base's kept records, then the upserts), COPY_ROWS
        or one upserted batch at a time; the parts that say where their vectors come from."""
        parts: list[_Part] = []
        with pq.ParquetWriter(path, STORED_RECORD) as writer:
            if self.base is not None:
                parts.extend(self._stage_base(writer))
            if self._writer is not None:  # something was upserted
                parts.append(self._stage_upserts(writer))
        return [part for part in parts if part.meta.num_rows]

    def _stage_base(self, writer: pq.ParquetWriter) -> list[_Part]:
        """The base's kept records, one part per place their vectors come from: a Pinecone base's
        namespace, or each segment's vectors.npy of a base built by the embedded index."""
        assert self.base is not None
        base_dir = self.index.versions.path(self.base)
        manifest = read_manifest(base_dir)
        replaced = pa.array(sorted(self._deletes | self._upserted), type=pa.string())
        parts = []
        for segment in version_segments(base_dir, manifest):
            metas, firsts, row, start = [], [], 0, 0
            live = segment.live_mask()
            for rows in pq.ParquetFile(segment.path / RECORDS_FILE).iter_batches(batch_size=COPY_ROWS):
                table = pa.Table.from_batches([rows]).select(list(STORED_RECORD.names)).cast(STORED_RECORD)
                counts = table.column("chunk_count").to_numpy().astype(np.int64)
                starts = row + np.cumsum(counts) - counts
                keep = np.asarray(pc.invert(pc.is_in(table.column("uid"), value_set=replaced)), dtype=bool)
                keep &= live[start : start + table.num_rows]
                kept = table.filter(pa.array(keep))
                writer.write_table(kept)
                metas.append(kept.select(list(VECTOR_META)))
                firsts.append(starts[keep])
                row += int(counts.sum())
                start += table.num_rows
            if not metas:
                continue
            meta = pa.concat_tables(metas).combine_chunks()
            first_rows = np.concatenate(firsts)
            matrix = segment.path / "vectors.npy"
            if matrix.exists():  # built by the embedded index: its vectors come from the lake, nothing re-embedded
                mapped = np.load(matrix, mmap_mode="r")
                offset, dim = int(mapped.offset), int(mapped.shape[1])
                del mapped
                parts.append(_Part(meta, first_rows, source=matrix, offset=offset, dim=dim))
            else:
                parts.append(_Part(meta, first_rows, namespace=str(manifest["namespace"])))
        return parts

    def _stage_upserts(self, writer: pq.ParquetWriter) -> _Part:
        spill = self._spill_dir()
        upserts = pq.ParquetFile(spill / UPSERT_RECORDS)
        metas = []
        for group in range(upserts.num_row_groups):
            table = upserts.read_row_group(group)
            writer.write_table(table)
            metas.append(table.select(list(VECTOR_META)))
        meta = pa.concat_tables(metas).combine_chunks() if metas else STORED_RECORD.empty_table().select(VECTOR_META)
        counts = meta.column("chunk_count").to_numpy().astype(np.int64)
        first_rows = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return _Part(meta, first_rows, source=spill / UPSERT_VECTORS, dim=self._dim or 0)

    # -- the requests ----------------------------------------------------------------------------------
    def _tasks(self, part: _Part, namespace: str) -> list[Callable[[], int]]:
        """One task per request, each holding only its range of the part: the vectors are read (or, from
        a Pinecone base, fetched) when the task runs."""
        size = self.index.options.batch_size
        if part.source is None:
            size = min(size, FETCH_IDS)
        ranges = [(start, min(start + size, part.vectors)) for start in range(0, part.vectors, size)]
        if part.source is None:
            assert part.namespace is not None
            return [self._copy_call(part, part.namespace, namespace, start, stop) for start, stop in ranges]
        return [self._upsert_call(namespace, partial(part.items, start, stop)) for start, stop in ranges]

    def _upsert_call(self, namespace: str, items: Callable[[], Items]) -> Callable[[], int]:
        data, opts = self.index.data_plane(), self.index.options

        def send() -> int:
            vectors = items()  # made now, held while this request (and its retries) runs
            response = self.index.retried(
                lambda: data.upsert(vectors=vectors, namespace=namespace),
                f"upsert of {len(vectors)} vectors into {opts.index_name}/{namespace}",
            )
            return int(response.upserted_count)

        return send

    def _copy_call(self, part: _Part, source: str, namespace: str, start: int, stop: int) -> Callable[[], int]:
        """Copy vectors [start, stop) of the part from the base namespace into the new one."""
        data, opts = self.index.data_plane(), self.index.options

        def fetch() -> Items:
            ids = part.ids(start, stop)
            fetched = self.index.retried(
                lambda: data.fetch(ids=ids, namespace=source),
                f"fetch of {len(ids)} vectors from {opts.index_name}/{source}",
            )
            missing = len(ids) - len(fetched.vectors)
            if missing:
                raise PineconeIndexError(f"base namespace {source} lacks {missing} of {len(ids)} vectors")
            return [{"id": v.id, "values": list(v.values), "metadata": v.metadata} for v in fetched.vectors.values()]

        return self._upsert_call(namespace, fetch)

    def _wait_until_counted(self, data: Index, namespace: str, expected: int) -> None:
        """Pinecone is eventually consistent: wait until the namespace counts every vector."""
        opts = self.index.options
        deadline = time.monotonic() + opts.ready_timeout_s
        delay = 0.1
        while True:
            stats = self.index.retried(lambda: data.describe_index_stats(), f"stats of {opts.index_name}")
            summary = stats.namespaces.get(namespace)
            counted = summary.vector_count if summary is not None else 0
            if counted == expected:
                return
            if time.monotonic() > deadline:
                raise PineconeIndexError(
                    f"namespace {namespace} counts {counted} vectors, expected {expected}, after "
                    f"{opts.ready_timeout_s:.0f}s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
