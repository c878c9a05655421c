"""The one Pinecone client of a PineconeIndex, shared by the index, its readers and its builders: the
SDK clients (control and data plane), the index handle (created on a build's first write, its
dimension checked), the one retry layer (index.pinecone_retries) and the calls that batch, run in
parallel or delete. It knows nothing of the lake: what to write or delete comes from the callers.

Credentials: the caller passes the API key in (the Airflow connection's, from the airflow layer);
without one, PINECONE_API_KEY from the environment, read here and nowhere else. Never logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from patientinsight.index.pinecone_cache import VectorCache
from patientinsight.index.pinecone_retries import disable_sdk_retries, no_sdk_retries, with_retries
from patientinsight.index.pinecone_support import DELETE_IDS, VECTOR_FIELD, PineconeIndexError, PineconeOptions

if TYPE_CHECKING:
    from pinecone import Index, Pinecone
    from pinecone.models.indexes.index import IndexModel

log = logging.getLogger(__name__)

T = TypeVar("T")


class PineconeClient:
    """One Pinecone index's clients and calls, made on first use and kept for the process; the
    vectors its readers fetched are kept in `vector_cache` (index.pinecone_cache)."""

    def __init__(self, options: PineconeOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._client: Pinecone | None = None
        self._api_key = ""
        self._data: Index | None = None
        self._dimension: int | None = None
        self._readers: ThreadPoolExecutor | None = None
        self.vector_cache = VectorCache(options.cache_vectors)

    def sdk(self) -> Pinecone:
        """The control-plane client."""
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
        client = self.sdk()

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

    def parallel(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The calls' results, in order; several run on `concurrency` reader threads kept by the client
        (a reranker's fetches: a query waits for the slowest of them, not for their sum)."""
        if len(calls) <= 1:
            return [call() for call in calls]
        with self._lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="pinecone-read")
            readers = self._readers
        return list(readers.map(lambda call: call(), calls))

    def retried(self, call: Callable[[], T], what: str) -> T:
        """`call()` under the one retry layer (index.pinecone_retries), with these options' retries."""
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
