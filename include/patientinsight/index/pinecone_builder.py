"""Commits a Pinecone index version in the shared layout (index.pinecone has the design): only the
vectors that no kept version of its namespace holds are written (an update's changed records; a first
build, or a base of another layout, everything), each under its content-addressed id, and the version
folder appears once searches see them all. A journal (index.pinecone_gc) names what is written first,
so what a failed or killed build leaves is collected by the next prune.

Memory stays bounded as in the embedded builder (index.embedded_builder): each upsert goes straight
to a spill folder beside the versions (index.spill: records to a parquet file, vectors to a raw float32
file). The
lake's side of the version is written as the embedded index writes it (index.segments): the base's
segments hard-linked, the upserts one new segment, with no vectors.npy, so a small update costs the
lake what it changes, not the corpus. The requests are then sent from disk: each one reads its
`batch_size` vectors when it is sent, so at most `concurrency` requests' vectors are in memory at once,
whatever the number of records. What is
held for the whole build is per record and small: the upserted uids (as the embedded builder holds
them) and, while the commit sends, the metadata columns of the vectors (uid, content hash, age, sex,
chunk count; never the text) and the record keys its namespace's kept versions hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from patientinsight.index import pinecone_gc
from patientinsight.index.embedded_builder import write_segments
from patientinsight.index.pinecone_client import PineconeClient
from patientinsight.index.pinecone_freshness import PROBES, wait_until_searchable
from patientinsight.index.pinecone_keys import lake_namespace, referenced, versions_in
from patientinsight.index.pinecone_parts import VECTOR_META, Items, VectorPart
from patientinsight.index.pinecone_support import (
    FETCH_IDS,
    LAYOUT,
    SHARED,
    PineconeIndexError,
    is_shared,
)
from patientinsight.index.segments import RECORDS_FILE, version_segments
from patientinsight.index.spill import UPSERT_RECORDS, UPSERT_VECTORS, Spill, npy_layout
from patientinsight.index.types import STORED_RECORD, EmbeddedBatch, StagedExtras
from patientinsight.index.versions import VersionStore, new_version_id, read_manifest

log = logging.getLogger(__name__)

COPY_ROWS = 10_000  # base records read at a time, for where their vectors come from


class PineconeBuilder:
    """Collects upserts and deletes against a base version; the commit writes what its namespace lacks
    (see the module docstring) and then the version folder in the lake. Upserts are spilled to disk,
    never held."""

    def __init__(
        self, client: PineconeClient, versions: VersionStore, base: str | None, manifest: dict[str, Any]
    ) -> None:
        self.client = client
        self.versions = versions
        self.base = base
        self.manifest = manifest
        self._deletes: set[str] = set()
        self._spill = Spill(versions.root)
        self._positions: list[int | None] = []  # each upsert answer's log position (index.pinecone_freshness)

    def upsert(self, batch: EmbeddedBatch) -> None:
        """Write the batch to the spill folder: its records as one row group, its vectors appended."""
        self._spill.write(batch)

    def delete(self, uids: list[str]) -> None:
        self._deletes.update(uids)

    def commit(self, staged_extras: StagedExtras | None = None) -> str:
        """Write what the namespace lacks, wait until searches see it, then let the version folder
        appear; `staged_extras` adds files (the lexical index) from the staged records.parquet, as in
        the embedded builder."""
        client, versions, opts = self.client, self.versions, self.client.options
        spill = self._spill.finish()
        dim = int(self.manifest.get("dim", 0))
        version = new_version_id()
        namespace = lake_namespace(versions.root, self.manifest)
        try:
            data = client.data_plane(dimension=dim)
        except BaseException:
            self._spill.drop()
            raise
        try:
            with versions.staging(self.base) as staging, pinecone_gc.writing(versions.root) as journal:
                # The lake's side as the embedded index writes it: the base's segments linked, one new
                # segment of the upserts (and what the size policy merges), no vectors.npy.
                replaced = self._deletes | self._spill.uids
                lake = write_segments(versions, self.base, staging, replaced, spill, 0, with_vectors=False)
                records, vectors = lake["records"], _live_vectors(staging, lake["segments"])
                parts = self._vector_parts(namespace, spill)
                # What a kept version of the namespace holds is there, and stays while this build writes.
                held = referenced(versions_in(versions, namespace))
                sent = [p for p in (part.without(held) for part in parts) if p.meta.num_rows]
                del parts, held
                journal.record(namespace, [part.meta for part in sent])
                expected = sum(part.vectors for part in sent)
                tasks = [task for part in sent for task in self._tasks(part, namespace)]
                written = client.run_batches(tasks, f"upsert into {opts.index_name}/{namespace}")
                if written != expected:
                    raise PineconeIndexError(f"wrote {written} vectors into {namespace}, expected {expected}")
                wait_until_searchable(client, data, namespace, dim, self._positions, _sample(sent))
                del sent, tasks  # the metadata columns: not needed by the lexical index built next
                manifest = {
                    **self.manifest,
                    "segments": lake["segments"],
                    "backend": "pinecone",
                    "pinecone_index": opts.index_name,
                    LAYOUT: SHARED,
                    "namespace": namespace,
                    "metric": "cosine",
                    "version": version,
                    "parent": self.base,
                    "records": records,
                    "vectors": vectors,
                    "vectors_written": written,
                    "created_at": datetime.now(UTC).isoformat(),
                }
                versions.commit(staging, manifest, staged_extras)
        except BaseException as exc:
            # What this build wrote and no version references goes now, or at the next prune.
            try:
                pinecone_gc.collect_orphans(client, versions)
            except Exception as cleanup:
                log.warning("could not remove what the failed commit wrote to %s: %s", namespace, cleanup)
            if isinstance(exc, PineconeIndexError):
                raise PineconeIndexError(
                    f"Pinecone index {opts.index_name}: version {version} not committed, nothing published: {exc}"
                ) from exc
            raise
        finally:
            self._spill.drop()
        log.info(
            "committed version %s to Pinecone %s/%s: %d records, %d of their %d vectors written",
            version, opts.index_name, namespace, records, written, vectors,
        )  # fmt: skip
        return version

    # -- where the vectors to send come from -----------------------------------------------------------
    def _vector_parts(self, namespace: str, spill: Path | None) -> list[VectorPart]:
        """The new version's records whose vectors this namespace may lack, by where their vectors come
        from: the upserts, and the base's kept records unless the base is in this namespace already."""
        parts: list[VectorPart] = []
        if self.base is not None:
            manifest = read_manifest(self.versions.path(self.base))
            if not (is_shared(manifest) and manifest.get("namespace") == namespace):
                parts.extend(self._base_parts())
        if spill is not None:  # something was upserted
            parts.append(self._upserts_part(spill))
        return [part for part in parts if part.meta.num_rows]

    def _base_parts(self) -> list[VectorPart]:
        """The base's kept records, one part per place their vectors come from: a base's namespace (the
        earlier layout, or another embedding's), or each segment's vectors.npy of a base built by the
        embedded index."""
        assert self.base is not None
        base_dir = self.versions.path(self.base)
        manifest = read_manifest(base_dir)
        replaced = pa.array(sorted(self._deletes | self._spill.uids), type=pa.string())
        parts = []
        for segment in version_segments(base_dir, manifest):
            metas, firsts, row, start = [], [], 0, 0
            live = segment.live_mask()
            batches = pq.ParquetFile(segment.path / RECORDS_FILE).iter_batches(COPY_ROWS, columns=list(VECTOR_META))
            for rows in batches:
                table = pa.Table.from_batches([rows]).cast(_META_SCHEMA)
                counts = table.column("chunk_count").to_numpy().astype(np.int64)
                starts = row + np.cumsum(counts) - counts
                keep = np.asarray(pc.invert(pc.is_in(table.column("uid"), value_set=replaced)), dtype=bool)
                keep &= live[start : start + table.num_rows]
                metas.append(table.filter(pa.array(keep)))
                firsts.append(starts[keep])
                row += int(counts.sum())
                start += table.num_rows
            if not metas:
                continue
            meta = pa.concat_tables(metas).combine_chunks()
            first_rows = np.concatenate(firsts)
            matrix = segment.path / "vectors.npy"
            if matrix.exists():  # built by the embedded index: its vectors come from the lake, nothing re-embedded
                offset, dim = npy_layout(matrix)
                parts.append(VectorPart(meta, first_rows, source=matrix, offset=offset, dim=dim))
            else:
                namespace = str(manifest["namespace"])
                parts.append(VectorPart(meta, first_rows, namespace=namespace, shared=is_shared(manifest)))
        return parts

    def _upserts_part(self, spill: Path) -> VectorPart:
        meta = pq.read_table(spill / UPSERT_RECORDS, columns=list(VECTOR_META)).cast(_META_SCHEMA).combine_chunks()
        counts = meta.column("chunk_count").to_numpy().astype(np.int64)
        first_rows = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return VectorPart(meta, first_rows, source=spill / UPSERT_VECTORS, dim=self._spill.dim or 0)

    # -- the requests ----------------------------------------------------------------------------------
    def _tasks(self, part: VectorPart, namespace: str) -> list[Callable[[], int]]:
        """One task per request, each holding only its range of the part: the vectors are read (or, from
        a base's namespace, fetched) when the task runs."""
        size = self.client.options.batch_size
        if part.source is None:
            size = min(size, FETCH_IDS)
        ranges = [(start, min(start + size, part.vectors)) for start in range(0, part.vectors, size)]
        if part.source is None:
            return [self._copy_call(part, namespace, start, stop) for start, stop in ranges]
        return [self._upsert_call(namespace, partial(part.items, start, stop)) for start, stop in ranges]

    def _upsert_call(self, namespace: str, items: Callable[[], Items]) -> Callable[[], int]:
        data, opts = self.client.data_plane(), self.client.options

        def send() -> int:
            vectors = items()  # made now, held while this request (and its retries) runs
            response = self.client.retried(
                lambda: data.upsert(vectors=vectors, namespace=namespace),
                f"upsert of {len(vectors)} vectors into {opts.index_name}/{namespace}",
            )
            info = response.response_info
            self._positions.append(info.lsn_committed if info is not None else None)
            return int(response.upserted_count)

        return send

    def _copy_call(self, part: VectorPart, namespace: str, start: int, stop: int) -> Callable[[], int]:
        """Copy vectors [start, stop) of the part from its base's namespace, under shared-layout ids."""
        data, opts = self.client.data_plane(), self.client.options
        source = part.namespace
        assert source is not None

        def fetch() -> Items:
            renamed = dict(zip(part.ids(start, stop, part.shared), part.ids(start, stop), strict=True))
            fetched = self.client.retried(
                lambda: data.fetch(ids=list(renamed), namespace=source),
                f"fetch of {len(renamed)} vectors from {opts.index_name}/{source}",
            )
            missing = len(renamed) - len(fetched.vectors)
            if missing:
                raise PineconeIndexError(f"base namespace {source} lacks {missing} of {len(renamed)} vectors")
            return [
                {"id": renamed[v.id], "values": list(v.values), "metadata": v.metadata}
                for v in fetched.vectors.values()
            ]

        return self._upsert_call(namespace, fetch)


_META_SCHEMA = pa.schema([STORED_RECORD.field(name) for name in VECTOR_META])


def _live_vectors(staging: Path, entries: list[dict[str, Any]]) -> int:
    """The staged version's vectors: the chunk counts of its live records."""
    total = 0
    for segment in version_segments(staging, {"segments": entries}):
        counts = segment.column("chunk_count").to_numpy().astype(np.int64)
        total += int(counts[segment.live_mask()].sum())
    return total


def _sample(parts: list[VectorPart]) -> list[str]:
    """At most PROBES ids spread over all that is sent, the first and the last among them
    (index.pinecone_freshness)."""
    ends = np.cumsum([part.vectors for part in parts])
    if not len(ends) or not ends[-1]:
        return []
    picks = np.unique(np.linspace(0, ends[-1] - 1, num=min(PROBES, int(ends[-1]))).astype(np.int64))
    ids = []
    for pick in picks.tolist():
        part = int(np.searchsorted(ends, pick, side="right"))
        start = pick - int(ends[part] - parts[part].vectors)  # the pick within its part
        ids.extend(parts[part].ids(start, start + 1))
    return ids
