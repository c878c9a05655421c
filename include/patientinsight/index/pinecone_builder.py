"""Commits a Pinecone index version: a namespace of its own (the base's kept vectors copied, the upserts
written), counted complete before its folder appears in the lake (index.pinecone has the design).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from patientinsight.index.pinecone_support import FETCH_IDS, PineconeIndexError, vector_id, vector_metadata
from patientinsight.index.types import META_COLUMNS, EmbeddedBatch, StagedExtras
from patientinsight.index.versions import new_version_id, read_manifest

if TYPE_CHECKING:
    from pinecone import Index

    from patientinsight.index.pinecone import PineconeIndex

log = logging.getLogger(__name__)


class PineconeBuilder:
    """Collects upserts and deletes against a base version; the commit writes a new namespace (base
    minus deletes and replaced records, plus the upserts) and then the version folder in the lake."""

    def __init__(self, index: PineconeIndex, base: str | None, manifest: dict[str, Any]) -> None:
        self.index = index
        self.base = base
        self.manifest = manifest
        self._batches: list[EmbeddedBatch] = []
        self._deletes: set[str] = set()

    def upsert(self, batch: EmbeddedBatch) -> None:
        self._batches.append(batch)

    def delete(self, uids: list[str]) -> None:
        self._deletes.update(uids)

    def commit(self, staged_extras: StagedExtras | None = None) -> str:
        """Write the new namespace, wait until Pinecone counts it whole, then let the version folder
        appear; `staged_extras` adds files (the lexical index) from the staged records.parquet, as in
        the embedded builder."""
        index, opts = self.index, self.index.options
        replaced = set(self._deletes)
        for batch in self._batches:
            replaced.update(batch.records["uid"])
        frames: list[pd.DataFrame] = []
        kept = pd.DataFrame(columns=[*META_COLUMNS, "chunk_count"])
        if self.base is not None:
            base = pd.read_parquet(index.versions.path(self.base) / "records.parquet")
            kept = base.loc[~base["uid"].isin(replaced)].reset_index(drop=True)
            frames.append(kept)
        for batch in self._batches:
            frame = batch.records.loc[:, list(META_COLUMNS)].copy()
            frame["chunk_count"] = batch.chunk_counts.astype(np.int64)
            frames.append(frame)
        records = (
            pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*META_COLUMNS, "chunk_count"])
        )
        dim = int(self.manifest.get("dim", 0))
        version = new_version_id()
        namespace = version
        vectors = int(records["chunk_count"].sum()) if len(records) else 0
        data = index.data_plane(dimension=dim)
        try:
            with index.versions.staging(self.base) as staging:
                tasks = [*self._carry_tasks(kept, namespace), *self._upsert_tasks(namespace)]
                written = index.run_batches(tasks, f"upsert into {opts.index_name}/{namespace}")
                if written != vectors:
                    raise PineconeIndexError(f"wrote {written} vectors into {namespace}, expected {vectors}")
                self._wait_until_counted(data, namespace, vectors)
                records.to_parquet(staging / "records.parquet", index=False)
                manifest = {
                    **self.manifest,
                    "backend": "pinecone",
                    "pinecone_index": opts.index_name,
                    "namespace": namespace,
                    "metric": "cosine",
                    "version": version,
                    "parent": self.base,
                    "records": len(records),
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
        log.info(
            "committed version %s to Pinecone %s/%s: %d records", version, opts.index_name, namespace, len(records)
        )
        return version

    def _batches_of(self, items: list[Any]) -> Iterator[list[Any]]:
        size = self.index.options.batch_size
        for start in range(0, len(items), size):
            yield items[start : start + size]

    def _upsert_call(self, namespace: str, vectors: list[dict[str, Any]]) -> Callable[[], int]:
        data, opts = self.index.data_plane(), self.index.options

        def send() -> int:
            response = self.index.retried(
                lambda: data.upsert(vectors=vectors, namespace=namespace),
                f"upsert of {len(vectors)} vectors into {opts.index_name}/{namespace}",
            )
            return int(response.upserted_count)

        return send

    def _upsert_tasks(self, namespace: str) -> list[Callable[[], int]]:
        items: list[dict[str, Any]] = []
        for batch in self._batches:
            vectors = np.asarray(batch.vectors, dtype=np.float32)
            row = 0
            for rec, count in zip(batch.records.itertuples(index=False), batch.chunk_counts, strict=True):
                for chunk in range(int(count)):
                    items.append(_vector_item(rec, chunk, vectors[row]))
                    row += 1
        return [self._upsert_call(namespace, group) for group in self._batches_of(items)]

    def _carry_tasks(self, kept: pd.DataFrame, namespace: str) -> list[Callable[[], int]]:
        """Copy the kept base records' vectors into the new namespace: from the base's vectors.npy
        when the embedded index built it (switching backends re-embeds nothing), else fetch + upsert."""
        if self.base is None or kept.empty:
            return []
        base_dir = self.index.versions.path(self.base)
        if (base_dir / "vectors.npy").exists():
            return self._carry_from_file(base_dir, kept, namespace)
        source = read_manifest(base_dir)["namespace"]
        ids = [
            vector_id(str(uid), c) for uid, n in zip(kept["uid"], kept["chunk_count"], strict=True) for c in range(n)
        ]
        size = min(self.index.options.batch_size, FETCH_IDS)
        return [self._copy_call(source, namespace, ids[i : i + size]) for i in range(0, len(ids), size)]

    def _carry_from_file(self, base_dir: Path, kept: pd.DataFrame, namespace: str) -> list[Callable[[], int]]:
        base = pd.read_parquet(base_dir / "records.parquet", columns=["uid", "chunk_count"])
        starts = np.concatenate([[0], np.cumsum(base["chunk_count"].to_numpy())[:-1]])
        start_of = dict(zip(base["uid"], starts, strict=True))
        matrix = np.load(base_dir / "vectors.npy", mmap_mode="r")
        items = []
        for rec in kept.itertuples(index=False):
            start = int(start_of[rec.uid])
            for chunk in range(int(rec.chunk_count)):
                items.append(_vector_item(rec, chunk, np.asarray(matrix[start + chunk], dtype=np.float32)))
        return [self._upsert_call(namespace, group) for group in self._batches_of(items)]

    def _copy_call(self, source: str, namespace: str, ids: list[str]) -> Callable[[], int]:
        data, opts = self.index.data_plane(), self.index.options

        def copy() -> int:
            fetched = self.index.retried(
                lambda: data.fetch(ids=ids, namespace=source),
                f"fetch of {len(ids)} vectors from {opts.index_name}/{source}",
            )
            missing = len(ids) - len(fetched.vectors)
            if missing:
                raise PineconeIndexError(f"base namespace {source} lacks {missing} of {len(ids)} vectors")
            vectors = [{"id": v.id, "values": list(v.values), "metadata": v.metadata} for v in fetched.vectors.values()]
            return self._upsert_call(namespace, vectors)()

        return copy

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


def _vector_item(record: Any, chunk: int, values: np.ndarray) -> dict[str, Any]:
    """One chunk's vector as an upsert item: its id, values and metadata (never text)."""
    uid = str(record.uid)
    return {
        "id": vector_id(uid, chunk),
        "values": values.tolist(),
        "metadata": vector_metadata(uid, chunk, record.content_hash, record.age_years, record.sex),
    }
