"""The production vector index: Pinecone serverless behind the same interface as the embedded index.

Design
------
What lives where.
    The lake keeps, per version, exactly what the embedded index keeps except the vectors:
    `<index_dir>/versions/<version>/` holds records.parquet (the records, their content hashes and
    chunk counts), the BM25 lexical index the pipeline adds through `commit(extras=...)`, and
    manifest.json (with `"backend": "pinecone"`, the Pinecone index and the namespace). The vectors
    live in Pinecone. So the lexical and hybrid retrievers, the evaluation and the service read the
    lake as before, and only dense scoring goes over the network. `<index_dir>/CURRENT` is the same
    pointer file, replaced atomically with os.replace: publishing is the embedded index's publish.

One version = one namespace.
    Pinecone has no snapshots of a namespace and no transactions, so a version is made immutable by
    writing it into a namespace of its own (named by the version id) that nothing writes to after the
    commit. Readers of the published version never see a half-applied upsert, a rollback is a pointer
    switch, and removing a version is one `deleteAll` on its namespace (serverless namespaces cost
    nothing when empty). The price: unchanged records of the base version are copied into the new
    namespace (fetch from the base namespace, or from the base's vectors.npy when the base was built
    by the embedded index, then upsert). A copy costs read and write units per vector; in-place
    updates of one live namespace would cost less but would make the gate's "evaluate before
    publishing" and atomic switching impossible. Old namespaces go with their lake folders, beyond
    `keep_versions`.

Records and chunks.
    A record owns `chunk_count` vectors, with ids `<uid>#<chunk>` and metadata `uid`, `chunk`,
    `content_hash`, and `age_years` / `sex` when known (never text: no patient text leaves the lake).
    A record's score is its best chunk's cosine, as in the embedded index: the reader asks for the top
    chunks and keeps each record's first (best) one, asking for more until it has k records or the
    namespace is exhausted, so the k best records are exact.

Metric.
    Dense only, cosine: the embeddings are normalized sentence-transformer vectors and the embedded
    index scores by cosine, so scores match across backends. Lexical retrieval is BM25 over the lake
    (with RM3 expansion and a z-scored hybrid), which Pinecone's sparse-dense `dotproduct` records
    cannot express; a sparse half in Pinecone would duplicate the lexical index and force
    `dotproduct` on the dense half without serving the retrievers we use.

Filters.
    Age range and sex are Pinecone metadata filters (`$gte`/`$lte` on age_years, `$eq` on sex), so
    the server returns only allowed cases. A record of unknown age has no `age_years` field and fails
    any age filter, exactly like NaN in the embedded index.

Content hashes.
    They are in each vector's metadata and in records.parquet, written by the same commit. `hashes()`
    reads the lake (one file instead of listing and fetching every vector), so incremental ingestion
    skips unchanged records exactly as with the embedded index; `remote_hashes()` reads them back
    from Pinecone to check that the namespace holds what the lake says.

Writes and failures.
    Upserts go in batches (`batch_size` vectors) on `concurrency` threads. The SDK retries each
    request itself (3 retries on 408/429/5xx, honouring Retry-After, gated by a per-host retry
    budget that switches its retries off during an outage); on top, every batch is retried with
    exponential backoff with jitter on 429, 5xx and connection errors up to `max_retries` times. A
    batch that still fails raises `PineconeIndexError` naming the index, namespace and last error;
    the namespace is emptied and no version folder appears, so nothing can be published. Pinecone is
    eventually consistent: the commit waits until describe_index_stats counts every vector of the
    namespace before the version appears, so the gate's evaluation sees the whole version.

Credentials.
    The API key comes from the Airflow connection (`pinecone_default`, its password) when Airflow and
    the connection exist, else from PINECONE_API_KEY. The control-plane host is the connection's host,
    the `pinecone_host` setting, or the SDK default (PINECONE_CONTROLLER_HOST, else api.pinecone.io).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from patientinsight.index.embedded import EmbeddedIndex, EmbeddedReader
from patientinsight.index.pinecone_builder import PineconeBuilder
from patientinsight.index.pinecone_support import (
    QUERY_TOP_K_MAX,
    VECTOR_FIELD,
    PineconeIndexError,
    PineconeOptions,
    pinecone_filter,
    uid_chunk,
    with_retries,
)
from patientinsight.index.types import Exclusion, Filters, Hit

if TYPE_CHECKING:
    from pinecone import Index, Pinecone

log = logging.getLogger(__name__)


class PineconeIndex(EmbeddedIndex):
    """Versions as namespaces of one Pinecone serverless index; records, lexical index, manifests and
    the CURRENT pointer in the lake under `root` (see the module docstring)."""

    def __init__(self, root: Path, options: PineconeOptions, keep_versions: int = 5) -> None:
        super().__init__(root, keep_versions=keep_versions)
        self.options = options
        self._lock = threading.Lock()
        self._client: Pinecone | None = None
        self._api_key = ""
        self._data: Index | None = None
        self._dimension: int | None = None

    # -- connections ---------------------------------------------------------------------------
    def client(self) -> Pinecone:
        with self._lock:
            if self._client is None:
                from pinecone import Pinecone

                self._api_key = self.options.api_key or os.environ.get("PINECONE_API_KEY") or ""
                if not self._api_key:
                    raise PineconeIndexError(
                        "no Pinecone API key: set the password of the Airflow connection "
                        "(PATIENTINSIGHT_PINECONE_CONN_ID) or PINECONE_API_KEY"
                    )
                self._client = Pinecone(
                    api_key=self._api_key, host=self.options.controller_host, timeout=self.options.timeout_s
                )
            return self._client

    def data_plane(self, dimension: int | None = None) -> Index:
        """The index's data-plane client; with `dimension`, the index is created when missing."""
        if self._data is not None:
            if dimension is not None and self._dimension is not None and dimension != self._dimension:
                raise PineconeIndexError(
                    f"Pinecone index {self.options.index_name} has dimension {self._dimension}, the embedding model "
                    f"{dimension}: use another index name for another model"
                )
            return self._data
        from pinecone import Index
        from pinecone.errors.exceptions import NotFoundError

        opts = self.options
        client = self.client()
        try:
            model = with_retries(
                lambda: client.indexes.describe(opts.index_name), f"describe index {opts.index_name}", 3, opts.backoff_s
            )
        except PineconeIndexError as exc:
            if not isinstance(exc.__cause__, NotFoundError):
                raise
            if dimension is None:
                raise PineconeIndexError(f"Pinecone index {opts.index_name} does not exist") from exc
            log.info("creating Pinecone serverless index %s (dim %d, cosine)", opts.index_name, dimension)
            model = client.indexes.create(
                name=opts.index_name,
                schema={"fields": {VECTOR_FIELD: {"type": "dense_vector", "dimension": dimension, "metric": "cosine"}}},
                deployment={"deployment_type": "managed", "cloud": opts.cloud, "region": opts.region},
                timeout=int(opts.ready_timeout_s),
            )
        field = model.schema.fields.get(VECTOR_FIELD) if model.schema is not None else None
        found = getattr(field, "dimension", None)
        if dimension is not None and found is not None and found != dimension:
            raise PineconeIndexError(
                f"Pinecone index {opts.index_name} has dimension {found}, the embedding model {dimension}: "
                "use another index name for another model"
            )
        if not model.host:
            raise PineconeIndexError(f"Pinecone index {opts.index_name} has no host yet")
        with self._lock:
            self._dimension = found if isinstance(found, int) else dimension
            if self._data is None:
                self._data = Index(
                    host=model.host,
                    api_key=self._api_key,
                    timeout=opts.timeout_s,
                    connection_pool_maxsize=max(opts.concurrency * 2, 10),
                )
            return self._data

    # -- the VectorIndex interface ---------------------------------------------------------------
    def open(self, version: str) -> PineconeReader:
        path = self.versions_dir / version
        return PineconeReader(path, version, self)

    def builder(self, base: str | None, manifest: dict[str, Any]) -> PineconeBuilder:  # type: ignore[override]
        return PineconeBuilder(self, base, manifest)

    def _prune(self, keep: str) -> None:
        committed = sorted(p.name for p in self.versions_dir.iterdir() if not p.name.startswith("."))
        old = [v for v in committed if v != keep][: max(0, len(committed) - self.keep_versions)]
        for name in old:
            manifest_file = self.versions_dir / name / "manifest.json"
            namespace = json.loads(manifest_file.read_text()).get("namespace") if manifest_file.exists() else None
            if namespace:
                try:
                    self.drop_namespace(namespace)
                except PineconeIndexError as exc:  # published already: keep the folder, the next publish retries
                    log.warning("could not remove old version %s from Pinecone: %s", name, exc)
                    continue
            shutil.rmtree(self.versions_dir / name, ignore_errors=True)

    def drop_namespace(self, namespace: str) -> None:
        data = self.data_plane()
        opts = self.options
        with_retries(
            lambda: data.delete(delete_all=True, namespace=namespace),
            f"delete namespace {namespace} of {opts.index_name}",
            opts.max_retries,
            opts.backoff_s,
        )
        log.info("removed namespace %s from Pinecone index %s", namespace, opts.index_name)

    # -- batched writes ------------------------------------------------------------------------------
    def run_batches(self, tasks: Sequence[Callable[[], int]], what: str) -> int:
        """Run the tasks on `concurrency` threads; the first failure cancels what has not started."""
        total = done = 0
        started = last_log = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="pinecone") as pool:
            futures: set[Future[int]] = {pool.submit(task) for task in tasks}
            while futures:
                finished, futures = wait(futures, return_when=FIRST_EXCEPTION)
                for future in finished:
                    error = future.exception()
                    if error is not None:
                        for other in futures:
                            other.cancel()
                        raise error
                    total += future.result()
                    done += 1
                now = time.perf_counter()
                if now - last_log >= 5.0 or not futures:  # progress every 5 s, and at the end
                    last_log = now
                    rate = total / max(now - started, 1e-9)
                    log.info("%s: %d/%d batches, %d vectors (%.0f vectors/s)", what, done, len(tasks), total, rate)
        return total


class PineconeReader(EmbeddedReader):
    """One committed version: records and filters' metadata from the lake, dense scores from its
    namespace. `top`, `uid_at`, `count`, `hashes` and `records` are the embedded reader's."""

    def __init__(self, path: Path, version: str, index: PineconeIndex) -> None:  # no vectors.npy to map
        self.path = path
        self.version = version
        self.index = index
        self.manifest = json.loads((path / "manifest.json").read_text())
        self.namespace: str = self.manifest["namespace"]
        self._load_meta()
        self._position_of = {str(uid): i for i, uid in enumerate(self._uids)}  # `scores` looks up every match
        self._chunks = int(self._counts.sum())

    def _query(self, vector: np.ndarray, top_k: int, filters: Filters | None) -> list[tuple[str, int, float]]:
        data = self.index.data_plane()
        opts = self.index.options
        values = np.asarray(vector, dtype=np.float32).tolist()
        flt = pinecone_filter(filters)
        response = with_retries(
            lambda: data.query(vector=values, top_k=top_k, namespace=self.namespace, filter=flt),
            f"query namespace {self.namespace} of {opts.index_name}",
            opts.max_retries,
            opts.backoff_s,
        )
        return [(*uid_chunk(m.id), float(m.score)) for m in response.matches]

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()) -> list[Hit]:
        if k <= 0 or self._chunks == 0:
            return []
        # Dense scores do not depend on the rest of the corpus, so hiding records after the query ranks
        # the others exactly as a namespace without them would; ask for enough to make up for them.
        hidden = set(self._uids[exclude]) if isinstance(exclude, np.ndarray) else set(exclude)
        top_k = min(QUERY_TOP_K_MAX, self._chunks, max((k + len(hidden)) * 4, 10))
        while True:
            matches = self._query(vector, top_k, filters)
            best: dict[str, Hit] = {}
            for uid, chunk, score in matches:  # best first: a record's first match is its best chunk
                if uid not in best and uid not in hidden:
                    best[uid] = Hit(uid, score, chunk)
            exhausted = len(matches) < top_k or top_k >= min(QUERY_TOP_K_MAX, self._chunks)
            if len(best) >= k or exhausted:
                return list(best.values())[:k]
            top_k = min(QUERY_TOP_K_MAX, self._chunks, top_k * 4)

    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's and chunk's score, as the hybrid retriever needs. Exact up to 10,000 chunks
        per version (Pinecone's topK cap); beyond, chunks outside the top 10,000 get the lowest
        returned score, an upper bound of their true one."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        matches = self._query(vector, min(QUERY_TOP_K_MAX, self._chunks), None)
        floor = min((s for _, _, s in matches), default=0.0)
        chunk_scores = np.full(self._chunks, floor, dtype=np.float32)
        position_of = self._position_of or {}  # built in __init__
        for uid, chunk, score in matches:
            position = position_of.get(uid)
            if position is not None:
                chunk_scores[self._starts[position] + chunk] = score
        return np.maximum.reduceat(chunk_scores, self._starts), chunk_scores

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The candidates' scores, from one query's scores of every record (see `scores`)."""
        return self.scores(vector)[0][positions]

    def remote_hashes(self) -> dict[str, str]:
        """The content hashes as Pinecone holds them (list + fetch every vector): a consistency check."""
        data = self.index.data_plane()
        out: dict[str, str] = {}
        for page in data.list(namespace=self.namespace, limit=100):
            ids = [item.id for item in page.vectors if item.id]
            fetched = data.fetch(ids=ids, namespace=self.namespace)
            for vector in fetched.vectors.values():
                meta = vector.metadata or {}
                out[str(meta["uid"])] = str(meta["content_hash"])
        return out

    def remote_count(self) -> int:
        """Vectors in this version's namespace, per describe_index_stats (lags writes on Pinecone)."""
        stats = self.index.data_plane().describe_index_stats()
        summary = stats.namespaces.get(self.namespace)
        return summary.vector_count if summary is not None else 0
