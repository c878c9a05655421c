"""Reads one committed Pinecone version: records and the filters' metadata from the lake (index.records),
dense scores from its namespace (index.pinecone has the design).

In the shared layout the namespace also holds other versions' vectors (records this version replaced or
does not have yet), so every match is checked against the version's own records: its id names a uid and
a content hash, and only a match whose hash is the one this version holds for that uid counts. Dense
scores do not depend on the rest of the namespace, so dropping the others' matches ranks this version's
records exactly as a namespace of its own would; `search` asks for more until it has k of its own
(or has asked for 10,000 matches, Pinecone's cap: other versions' chunks would have to fill all of them).
A version of the earlier layout (a namespace of its own, ids `<uid>#<chunk>`) is read as before.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow.compute as pc

from patientinsight.index.pinecone_support import (
    FETCH_IDS,
    HASH_CHARS,
    QUERY_TOP_K_MAX,
    PineconeIndexError,
    is_shared,
    pinecone_filter,
    uid_chunk,
    uid_hash_chunk,
    vector_id,
)
from patientinsight.index.records import AnsweredByRecords, VersionRecords
from patientinsight.index.types import Exclusion, Filters, Hit
from patientinsight.index.versions import read_manifest

if TYPE_CHECKING:
    from pinecone.models.vectors.vector import Vector

    from patientinsight.index.pinecone_client import PineconeClient

T = TypeVar("T")

Match = tuple[int, int, float]  # (record position, chunk, score) of one of this version's vectors


class PineconeReader(AnsweredByRecords):
    """One committed version: what the records answer comes from the lake, as in the embedded reader;
    `search`, `scores` and `scores_at` read the namespace."""

    def __init__(self, path: Path, version: str, client: PineconeClient) -> None:  # no vectors.npy to map
        self.path = path
        self.version = version
        self.client = client
        self.manifest: dict[str, Any] = read_manifest(path)
        self.namespace: str = self.manifest["namespace"]
        self.shared = is_shared(self.manifest)
        self.meta = VersionRecords(path, self.manifest)
        self.meta.position_of()  # built now: every match is looked up
        self._prefixes: np.ndarray | None = None

    def _hash_prefixes(self) -> np.ndarray:
        """Each record's content hash as its vector ids carry it (bytes: 16 per record, not a dict)."""
        if self._prefixes is None:
            column = pc.utf8_slice_codeunits(self.meta.live_column("content_hash"), 0, HASH_CHARS)
            self._prefixes = np.array(column.to_pylist(), dtype=f"S{HASH_CHARS}")
        return self._prefixes

    def _own(self, vid: str) -> tuple[int, int] | None:
        """(position, chunk) of one of this version's vectors; None for another version's."""
        if not self.shared:
            uid, chunk = uid_chunk(vid)
            position = self.meta.position_of().get(uid)
            return None if position is None else (position, chunk)
        uid, content, chunk = uid_hash_chunk(vid)
        position = self.meta.position_of().get(uid)
        if position is None or self._hash_prefixes()[position] != content.encode():
            return None
        return position, chunk

    def _ids(self, positions: np.ndarray) -> list[str]:
        """The vector ids of these records, each record's chunks in order."""
        counts = self.meta.counts[positions]
        prefixes = self._hash_prefixes() if self.shared else None
        ids: list[str] = []
        for position, count in zip(positions, counts, strict=True):
            uid = self.meta.uid_at(int(position))
            content = prefixes[position].decode() if prefixes is not None else None
            ids.extend(vector_id(uid, chunk, content) for chunk in range(int(count)))
        return ids

    # Dense scores, from the namespace.
    def _retried(self, call: Callable[[], T], what: str) -> T:
        return self.client.retried(call, f"{what} namespace {self.namespace} of {self.client.options.index_name}")

    def _limit(self) -> int:
        """The most matches worth asking for: a namespace of its own holds only this version's chunks."""
        return QUERY_TOP_K_MAX if self.shared else min(QUERY_TOP_K_MAX, self.meta.chunks)

    def _query(self, vector: np.ndarray, top_k: int, filters: Filters | None) -> tuple[list[Match], int, float]:
        """This version's matches among the top_k, best first; how many matches came back; the lowest score."""
        data = self.client.data_plane()
        values = np.asarray(vector, dtype=np.float32).tolist()
        flt = pinecone_filter(filters)
        response = self._retried(
            lambda: data.query(vector=values, top_k=top_k, namespace=self.namespace, filter=flt), "query"
        )
        own = []
        for match in response.matches:
            found = self._own(match.id)
            if found is not None:
                own.append((*found, float(match.score)))
        lowest = min((float(m.score) for m in response.matches), default=0.0)
        return own, len(response.matches), lowest

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()) -> list[Hit]:
        if k <= 0 or self.meta.chunks == 0:
            return []
        # Dense scores do not depend on the rest of the corpus, so hiding records after the query ranks
        # the others exactly as a namespace without them would; ask for enough to make up for them.
        if isinstance(exclude, np.ndarray):
            hidden = set(np.flatnonzero(exclude).tolist())
        else:
            hidden = set(self.meta.positions(exclude).tolist())
        limit = self._limit()
        top_k = min(limit, max((k + len(hidden)) * 4, 10))
        while True:
            matches, returned, _ = self._query(vector, top_k, filters)
            best: dict[int, Hit] = {}
            for position, chunk, score in matches:  # best first: a record's first match is its best chunk
                if position not in best and position not in hidden:
                    best[position] = Hit(self.meta.uid_at(position), score, chunk)
            if len(best) >= k or returned < top_k or top_k >= limit:
                return list(best.values())[:k]
            top_k = min(limit, top_k * 4)

    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's and chunk's score, as the dense and hybrid retrievers need. Exact while the
        10,000 best matches (Pinecone's topK cap) hold all of the version's chunks; beyond, chunks not
        returned get the lowest returned score, an upper bound of their true one."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        matches, _, lowest = self._query(vector, self._limit(), None)
        chunk_scores = np.full(self.meta.chunks, lowest, dtype=np.float32)
        starts = self.meta.starts
        for position, chunk, score in matches:
            chunk_scores[starts[position] + chunk] = score
        return np.maximum.reduceat(chunk_scores, starts), chunk_scores

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The candidates' exact scores (their best chunk's cosine), from their own vectors fetched by id:
        a reranker's few hundred records cost a few fetches, sent at once, where a query of the whole
        namespace (`scores`) returns 10,000 matches and is only exact up to that many chunks. Vectors
        fetched before are taken from the client's cache (index.pinecone_cache)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return np.empty(0, np.float32)
        ids = self._ids(positions)
        cache = self.client.vector_cache
        values = cache.get(self.namespace, ids)
        fetched = {
            vid: np.asarray(v.values, dtype=np.float32)
            for vid, v in self._fetch([i for i in ids if i not in values]).items()
        }
        cache.put(self.namespace, fetched)
        values.update(fetched)
        missing = [i for i in ids if i not in values]
        if missing:
            raise PineconeIndexError(f"{self.namespace} lacks {len(missing)} vectors of version {self.version}")
        matrix = np.stack([values[i] for i in ids])
        query = np.asarray(vector, dtype=np.float32)
        # Cosine, as Pinecone scores: the vectors are normalized, but a query need not be.
        norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(query))
        chunk_scores = (matrix @ query) / np.where(norms > 0, norms, 1.0)
        counts = self.meta.counts[positions]
        return np.maximum.reduceat(chunk_scores, np.cumsum(counts) - counts).astype(np.float32)

    def _fetch(self, ids: list[str]) -> dict[str, Vector]:
        """These vectors by id (values and metadata), FETCH_IDS a request, sent together (client.parallel)."""
        data = self.client.data_plane()

        def fetch(wanted: list[str]) -> dict[str, Vector]:
            fetched = self._retried(partial(data.fetch, ids=wanted, namespace=self.namespace), "fetch from")
            return dict(fetched.vectors)

        out: dict[str, Vector] = {}
        batches = [ids[i : i + FETCH_IDS] for i in range(0, len(ids), FETCH_IDS)]
        for found in self.client.parallel([partial(fetch, batch) for batch in batches]):
            out.update(found)
        return out

    # Consistency checks against what Pinecone holds: every vector of the version, fetched by id.
    def remote_hashes(self) -> dict[str, str]:
        """The content hashes as Pinecone holds them in this version's vectors."""
        out: dict[str, str] = {}
        for vector in self._fetch(self._ids(np.arange(self.count()))).values():
            meta = vector.metadata or {}
            out[str(meta["uid"])] = str(meta["content_hash"])
        return out

    def remote_count(self) -> int:
        """This version's vectors that Pinecone holds."""
        return len(self._fetch(self._ids(np.arange(self.count()))))
