"""The production vector index: Pinecone serverless, behind the interface of index.types. This module
holds the backend's design and the index (connections, versions, batched writes and reads); its
reader, builder, vector sources (parts), keys, pruning (gc), freshness, retries and vocabulary
(support) are the pinecone_* modules beside it.

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
    `<index_dir>/pinecone/` holds the lake's id and the builds' write lock and journals
    (index.pinecone_gc).

One shared namespace per lake and embedding, content-addressed vectors.
    A record's vectors have ids `<uid>#<first 16 hex of its content hash>#<chunk>` and live in the one
    namespace of the version's lake and embedding (`vectors-<lake id>-<digest of model, chunking,
    numerics>`): the lake's id keeps lakes that share a Pinecone index apart, since each prunes by its
    own versions only. A vector is written once and never changed: the same id always means the same
    contents embedded the same way, so every version that holds a record's contents shares its
    vectors, and a new version writes only what no kept version of the namespace holds. A 100-record
    update into 250,000 records writes its ~100 records' vectors, not 250,000 copies
    (docs/PERFORMANCE.md, "Into Pinecone").
Why this and not the alternatives.
    A namespace per version (this backend's first layout) made a version immutable, but every version
    copied all of its base's vectors: the cost of a small update grew with the corpus. Updating one
    live namespace in place would break the gate (it evaluates a version before what the published one
    serves changes) and rollback. A version label in each vector's metadata would need a metadata
    update of every kept vector per version. Delta namespaces (a version = its base's namespaces plus
    a small one) would cost one query per namespace and merges to bound them.
What each guarantee rests on.
    - A version is its lake folder (records with uid and content hash, lexical index, manifest with
      `"vector_layout": "shared"` and the namespace): it names exactly the vectors it needs, and no
      other version's write can change them (content addressing; and a build skips what kept versions
      hold, so it never even rewrites them).
    - Readers drop the matches of other versions (index.pinecone_reader): a match counts only when its
      uid and hash are the version's own. `search` asks for more until it has k of its own records, so
      the k best are exact; the rerank pool is scored from the records' own vectors, fetched by id.
    - Atomic publish and the gate: the commit waits until searches see every vector it wrote (log
      positions, index.pinecone_freshness) before the folder appears; publishing switches CURRENT;
      nothing the published version reads is written or deleted meanwhile. Rollback is the same switch
      to any kept version: its vectors are kept with it.
    - Pruning (index.pinecone_gc) deletes a pruned version's vectors that no kept version references,
      never while a build writes; the last version of a namespace takes the namespace with it. A build
      lists what it writes in a journal first, so what a failed or killed build wrote is deleted by the
      next prune, unless a kept version references it.
Versions of the earlier layout.
    A version without `vector_layout` keeps a namespace of its own (named by its id, ids
    `<uid>#<chunk>`): it is still read, rolled back to and pruned (its namespace emptied) as before. A
    build on such a base copies its kept vectors into the shared namespace once, as a build on an
    embedded base reads them from the lake's vectors.npy: nothing is re-embedded.

Records and chunks.
    A record owns `chunk_count` vectors with metadata `uid`, `chunk`, `content_hash`, and `age_years` /
    `sex` when known (never text: no patient text leaves the lake). A record's score is its best chunk's
    cosine, as in the embedded index.

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
    They are in each vector's id and metadata and in records.parquet, written by the same commit.
    `hashes()` reads the lake, so incremental ingestion skips unchanged records exactly as with the
    embedded index; `remote_hashes()` fetches the version's vectors back by id to check that Pinecone
    holds what the lake says.

Writes and failures.
    Upserts go in batches (`batch_size` vectors) on `concurrency` threads. Every call is retried in
    one layer, ours (index.pinecone_retries has the why): the SDK's own retries are off, and each
    batch, query or fetch is tried up to `max_retries + 1` times on 408, 429, 5xx, connection errors
    and timeouts, with exponential backoff, full jitter and Retry-After respected. A batch that still
    fails raises `PineconeIndexError` naming the index, namespace and last error; no version folder
    appears, so nothing can be published, and what the build wrote goes at once (or at the next
    prune) unless a kept version references it.

Credentials.
    The API key comes from the Airflow connection (`pinecone_default`, its password) when Airflow and
    the connection exist, else from PINECONE_API_KEY. The control-plane host is the connection's host,
    the `pinecone_host` setting, or the SDK default (PINECONE_CONTROLLER_HOST, else api.pinecone.io).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from patientinsight.index import pinecone_gc
from patientinsight.index.pinecone_builder import PineconeBuilder
from patientinsight.index.pinecone_cache import VectorCache
from patientinsight.index.pinecone_reader import PineconeReader
from patientinsight.index.pinecone_retries import disable_sdk_retries, no_sdk_retries, with_retries
from patientinsight.index.pinecone_support import (
    DELETE_IDS,
    VECTOR_FIELD,
    PineconeIndexError,
    PineconeOptions,
    is_shared,
    shared_namespace,
)
from patientinsight.index.versions import VersionStore

if TYPE_CHECKING:
    from pinecone import Index, Pinecone
    from pinecone.models.indexes.index import IndexModel

log = logging.getLogger(__name__)

T = TypeVar("T")

LAKE_ID = "lake-id"  # in <root>/pinecone/: part of the shared namespaces' names


class PineconeIndex:
    """Versions as sets of content-addressed vectors in one Pinecone serverless index; records, lexical
    index, manifests and the CURRENT pointer in the lake under `root` (see the module docstring)."""

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
        self._readers: ThreadPoolExecutor | None = None
        self.vector_cache = VectorCache(options.cache_vectors)

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
        """Switch CURRENT, prune (index.versions, releasing what pruned versions alone held), and delete
        what builds that did not finish left in Pinecone."""
        self.versions.publish(version)
        pinecone_gc.collect_orphans(self)

    def _release(self, version: str, manifest: dict[str, Any] | None) -> bool:
        """A pruned version's vectors that no kept version uses go with its folder (the shared layout);
        a version of the earlier layout takes its namespace; one from the embedded index has none."""
        if manifest is None or not manifest.get("namespace"):
            return True
        if is_shared(manifest):
            return pinecone_gc.release(self, version, manifest)
        namespace = str(manifest["namespace"])
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
        self._delete(lambda: data.delete(delete_all=True, namespace=namespace), f"delete namespace {namespace}")
        log.info("removed namespace %s from Pinecone index %s", namespace, self.options.index_name)

    def delete_ids(self, namespace: str, ids: Sequence[str]) -> int:
        """Delete these vectors, DELETE_IDS a request; how many were asked for (Pinecone ignores ids it
        does not hold)."""
        data = self.data_plane()

        def delete(chunk: list[str]) -> int:
            self._delete(lambda: data.delete(ids=chunk, namespace=namespace), f"delete of {len(chunk)} vectors")
            return len(chunk)

        tasks = [partial(delete, list(ids[i : i + DELETE_IDS])) for i in range(0, len(ids), DELETE_IDS)]
        return self.run_batches(tasks, f"delete from {self.options.index_name}/{namespace}") if tasks else 0

    def _delete(self, call: Callable[[], object], what: str) -> None:
        """A delete under the retry layer. Pinecone answers 404 for a namespace it does not hold (emptied
        before, or never written): nothing is left to delete, so that is done too."""
        from pinecone.errors.exceptions import NotFoundError

        try:
            self.retried(call, f"{what} of {self.options.index_name}")
        except PineconeIndexError as exc:
            if not isinstance(exc.__cause__, NotFoundError):
                raise

    def namespace_for(self, manifest: dict[str, Any]) -> str:
        """The shared namespace of this lake's versions embedded as `manifest` says (pinecone_support)."""
        return shared_namespace(manifest, self.lake_id())

    def lake_id(self) -> str:
        """This lake's id, made by its first build and kept in `<root>/pinecone/` (travels with the lake)."""
        path = self.root / pinecone_gc.FOLDER / LAKE_ID
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            made = path.with_name(f".{LAKE_ID}.{uuid.uuid4().hex}")
            made.write_text(uuid.uuid4().hex[:12])
            with contextlib.suppress(FileExistsError):  # another build made it first: its id stands
                os.link(made, path)
            made.unlink()
        return path.read_text().strip()

    def parallel(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The calls' results, in order; several run on `concurrency` reader threads kept by the index
        (a reranker's fetches: a query waits for the slowest of them, not for their sum)."""
        if len(calls) <= 1:
            return [call() for call in calls]
        with self._lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="pinecone-read")
            readers = self._readers
        return list(readers.map(lambda call: call(), calls))

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
