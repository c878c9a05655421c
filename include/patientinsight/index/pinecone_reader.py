"""Reads one committed Pinecone version: records and the filters' metadata from the lake (index.records),
dense scores from the version's namespace (index.pinecone has the design).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from patientinsight.index.pinecone_support import (
    FETCH_IDS,
    QUERY_TOP_K_MAX,
    PineconeIndexError,
    pinecone_filter,
    uid_chunk,
    vector_id,
)
from patientinsight.index.records import AnsweredByRecords, VersionRecords
from patientinsight.index.types import Exclusion, Filters, Hit
from patientinsight.index.versions import read_manifest

if TYPE_CHECKING:
    from patientinsight.index.pinecone import PineconeIndex

T = TypeVar("T")


class PineconeReader(AnsweredByRecords):
    """One committed version: what the records answer comes from the lake, as in the embedded reader;
    `search`, `scores` and `scores_at` query the namespace."""

    def __init__(self, path: Path, version: str, index: PineconeIndex) -> None:  # no vectors.npy to map
        self.path = path
        self.version = version
        self.index = index
        self.manifest: dict[str, Any] = read_manifest(path)
        self.namespace: str = self.manifest["namespace"]
        self.meta = VersionRecords(path)
        self.meta.position_of()  # built now: `scores` looks up every match

    # Dense scores, from the namespace.
    def _retried(self, call: Callable[[], T], what: str) -> T:
        return self.index.retried(call, f"{what} namespace {self.namespace} of {self.index.options.index_name}")

    def _query(self, vector: np.ndarray, top_k: int, filters: Filters | None) -> list[tuple[str, int, float]]:
        data = self.index.data_plane()
        values = np.asarray(vector, dtype=np.float32).tolist()
        flt = pinecone_filter(filters)
        response = self._retried(
            lambda: data.query(vector=values, top_k=top_k, namespace=self.namespace, filter=flt), "query"
        )
        return [(*uid_chunk(m.id), float(m.score)) for m in response.matches]

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()) -> list[Hit]:
        chunks = self.meta.chunks
        if k <= 0 or chunks == 0:
            return []
        # Dense scores do not depend on the rest of the corpus, so hiding records after the query ranks
        # the others exactly as a namespace without them would; ask for enough to make up for them.
        hidden = set(self.meta.uids[exclude]) if isinstance(exclude, np.ndarray) else set(exclude)
        top_k = min(QUERY_TOP_K_MAX, chunks, max((k + len(hidden)) * 4, 10))
        while True:
            matches = self._query(vector, top_k, filters)
            best: dict[str, Hit] = {}
            for uid, chunk, score in matches:  # best first: a record's first match is its best chunk
                if uid not in best and uid not in hidden:
                    best[uid] = Hit(uid, score, chunk)
            exhausted = len(matches) < top_k or top_k >= min(QUERY_TOP_K_MAX, chunks)
            if len(best) >= k or exhausted:
                return list(best.values())[:k]
            top_k = min(QUERY_TOP_K_MAX, chunks, top_k * 4)

    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's and chunk's score, as the hybrid retriever needs. Exact up to 10,000 chunks
        per version (Pinecone's topK cap); beyond, chunks outside the top 10,000 get the lowest
        returned score, an upper bound of their true one."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        matches = self._query(vector, min(QUERY_TOP_K_MAX, self.meta.chunks), None)
        floor = min((s for _, _, s in matches), default=0.0)
        chunk_scores = np.full(self.meta.chunks, floor, dtype=np.float32)
        position_of, starts = self.meta.position_of(), self.meta.starts
        for uid, chunk, score in matches:
            position = position_of.get(uid)
            if position is not None:
                chunk_scores[starts[position] + chunk] = score
        return np.maximum.reduceat(chunk_scores, starts), chunk_scores

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The candidates' exact scores (their best chunk's cosine), from their own vectors fetched by id:
        a reranker's few hundred records cost a few fetches, where a query of the whole namespace
        (`scores`) returns 10,000 matches and is only exact up to that many chunks."""
        if len(positions) == 0:
            return np.empty(0, np.float32)
        counts = self.meta.counts[positions]
        ids = [vector_id(self.meta.uid_at(int(p)), c) for p, n in zip(positions, counts, strict=True) for c in range(n)]
        data = self.index.data_plane()
        values: dict[str, list[float]] = {}
        for start in range(0, len(ids), FETCH_IDS):
            wanted = ids[start : start + FETCH_IDS]
            fetched = self._retried(partial(data.fetch, ids=wanted, namespace=self.namespace), "fetch from")
            values.update({key: list(v.values) for key, v in fetched.vectors.items()})
        missing = [i for i in ids if i not in values]
        if missing:
            raise PineconeIndexError(f"{len(missing)} vectors of version {self.version} are missing from its namespace")
        matrix = np.asarray([values[i] for i in ids], dtype=np.float32)
        chunk_scores = matrix @ np.asarray(vector, dtype=np.float32)
        return np.maximum.reduceat(chunk_scores, np.cumsum(counts) - counts)

    # Consistency checks against what Pinecone holds.
    def remote_hashes(self) -> dict[str, str]:
        """The content hashes as Pinecone holds them (list + fetch every vector): a consistency check."""
        data = self.index.data_plane()
        out: dict[str, str] = {}
        token: str | None = None
        while True:
            page = self._retried(
                partial(data.list_paginated, namespace=self.namespace, limit=100, pagination_token=token), "list"
            )
            ids = [item.id for item in page.vectors if item.id]
            if ids:
                fetched = self._retried(partial(data.fetch, ids=ids, namespace=self.namespace), "fetch from")
                for vector in fetched.vectors.values():
                    meta = vector.metadata or {}
                    out[str(meta["uid"])] = str(meta["content_hash"])
            token = page.pagination.next if page.pagination is not None else None
            if token is None:
                return out

    def remote_count(self) -> int:
        """Vectors in this version's namespace, per describe_index_stats (lags writes on Pinecone)."""
        data = self.index.data_plane()
        stats = self._retried(lambda: data.describe_index_stats(), "stats of")
        summary = stats.namespaces.get(self.namespace)
        return summary.vector_count if summary is not None else 0
