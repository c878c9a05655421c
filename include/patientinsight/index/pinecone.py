"""The production vector index: Pinecone serverless, behind the interface of index.types. This module
holds the backend's design and the index (connections, versions, batched writes); its reader, builder,
retries and vocabulary are the pinecone_* modules beside it.

Design
------
What lives where.
    The lake keeps, per version, exactly what the embedded index keeps except the vectors:
    `<index_dir>/versions/<version>/` holds records.parquet (the records, their content hashes and
    chunk counts), the BM25 lexical index the pipeline adds through `commit(staged_extras=...)`, and
    manifest.json (with `"backend": "pinecone"`, the Pinecone index and the namespace). The vectors
    live in Pinecone. So the lexical and hybrid retrievers, the evaluation and the service read the
    lake as before, and only dense scoring goes over the network. `<index_dir>/CURRENT` is the same
    pointer file, replaced atomically with os.replace: both backends keep their version folders, the
    pointer and the pruning with index.versions, and the per-record metadata with index.records.

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
    `keep_versions` (the version store's release hook; a namespace that cannot be emptied keeps its
    folder, and the next publish tries again).

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
    Upserts go in batches (`batch_size` vectors) on `concurrency` threads. Every call is retried in
    one layer, ours (index.pinecone_retries has the why): the SDK's own retries are off, and each
    batch, query or fetch is tried up to `max_retries + 1` times on 408, 429, 5xx, connection errors
    and timeouts, with exponential backoff, full jitter and Retry-After respected. A batch that still
    fails raises `PineconeIndexError` naming the index, namespace and last error; the namespace is
    emptied and no version folder appears, so nothing can be published. Pinecone is eventually
    consistent: the commit waits until describe_index_stats counts every vector of the namespace
    before the version appears, so the gate's evaluation sees the whole version.

Credentials.
    The API key comes from the Airflow connection (`pinecone_default`, its password) when Airflow and
    the connection exist, else from PINECONE_API_KEY. The control-plane host is the connection's host,
    the `pinecone_host` setting, or the SDK default (PINECONE_CONTROLLER_HOST, else api.pinecone.io).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from patientinsight.index.pinecone_builder import PineconeBuilder
from patientinsight.index.pinecone_reader import PineconeReader
from patientinsight.index.pinecone_retries import disable_sdk_retries, no_sdk_retries, with_retries
from patientinsight.index.pinecone_support import VECTOR_FIELD, PineconeIndexError, PineconeOptions
from patientinsight.index.versions import VersionStore

if TYPE_CHECKING:
    from pinecone import Index, Pinecone
    from pinecone.models.indexes.index import IndexModel

log = logging.getLogger(__name__)

T = TypeVar("T")


class PineconeIndex:
    """Versions as namespaces of one Pinecone serverless index; records, lexical index, manifests and
    the CURRENT pointer in the lake under `root` (see the module docstring)."""

    def __init__(self, root: Path, options: PineconeOptions, keep_versions: int = 5) -> None:
        self.versions = VersionStore(root, keep_versions, release=self._release)
        self.root = self.versions.root
        self.versions_dir = self.versions.versions_dir
        self.options = options
        self._lock = threading.Lock()
        self._client: Pinecone | None = None
        self._api_key = ""
        self._data: Index | None = None
        self._dimension: int | None = None

    # -- the VectorIndex interface ---------------------------------------------------------------
    def published(self) -> str | None:
        return self.versions.published()

    def manifest(self, version: str) -> dict[str, Any]:
        return self.versions.manifest(version)

    def open(self, version: str) -> PineconeReader:
        return PineconeReader(self.versions.path(version), version, self)

    def builder(self, base: str | None, manifest: dict[str, Any]) -> PineconeBuilder:
        return PineconeBuilder(self, base, manifest)

    def publish(self, version: str) -> None:
        self.versions.publish(version)

    def _release(self, version: str, manifest: dict[str, Any] | None) -> bool:
        """An old version's namespace goes with its folder (a version from the embedded index has none)."""
        namespace = manifest.get("namespace") if manifest else None
        if not namespace:
            return True
        try:
            self.drop_namespace(namespace)
        except PineconeIndexError as exc:  # published already: the next publish retries
            log.warning("could not remove old version %s from Pinecone: %s", version, exc)
            return False
        return True

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
                    api_key=self._api_key,
                    host=self.options.controller_host,
                    timeout=self.options.timeout_s,
                    retry_config=no_sdk_retries(),  # ours govern (index.pinecone_retries)
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

        opts = self.options
        model = self._describe_or_create(dimension)
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
                data = Index(
                    host=model.host,
                    api_key=self._api_key,
                    timeout=opts.timeout_s,
                    connection_pool_maxsize=max(opts.concurrency * 2, 10),
                )
                disable_sdk_retries(data)  # ours govern (index.pinecone_retries)
                self._data = data
            return self._data

    def _describe_or_create(self, dimension: int | None) -> IndexModel:
        from pinecone.errors.exceptions import ConflictError, NotFoundError

        opts = self.options
        client = self.client()

        def describe() -> IndexModel:
            return self.retried(lambda: client.indexes.describe(opts.index_name), f"describe index {opts.index_name}")

        try:
            return describe()
        except PineconeIndexError as exc:
            if not isinstance(exc.__cause__, NotFoundError):
                raise
            if dimension is None:
                raise PineconeIndexError(f"Pinecone index {opts.index_name} does not exist") from exc
        log.info("creating Pinecone serverless index %s (dim %d, cosine)", opts.index_name, dimension)
        try:
            return self.retried(
                lambda: client.indexes.create(
                    name=opts.index_name,
                    schema={
                        "fields": {VECTOR_FIELD: {"type": "dense_vector", "dimension": dimension, "metric": "cosine"}}
                    },
                    deployment={"deployment_type": "managed", "cloud": opts.cloud, "region": opts.region},
                    timeout=int(opts.ready_timeout_s),
                ),
                f"create index {opts.index_name}",
            )
        except PineconeIndexError as exc:
            if not isinstance(exc.__cause__, ConflictError):
                raise
            return describe()  # created meanwhile: by an attempt whose answer was lost, or another run

    def drop_namespace(self, namespace: str) -> None:
        data = self.data_plane()
        what = f"delete namespace {namespace} of {self.options.index_name}"
        self.retried(lambda: data.delete(delete_all=True, namespace=namespace), what)
        log.info("removed namespace %s from Pinecone index %s", namespace, self.options.index_name)

    def retried(self, call: Callable[[], T], what: str) -> T:
        """`call()` under the one retry layer (index.pinecone_retries), with this index's retry options."""
        return with_retries(call, what, self.options.max_retries, self.options.backoff_s)

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
