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
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from patientinsight.index import (
    META_COLUMNS,
    EmbeddedBatch,
    EmbeddedIndex,
    EmbeddedReader,
    Exclusion,
    Filters,
    Hit,
)

if TYPE_CHECKING:
    from pinecone import Index, Pinecone

log = logging.getLogger(__name__)

T = TypeVar("T")

VECTOR_FIELD = "_values"  # the reserved dense field name the vectors API addresses
QUERY_TOP_K_MAX = 10_000  # Pinecone's cap on topK
FETCH_IDS = 200  # ids per fetch request (they travel in the query string)


class PineconeIndexError(RuntimeError):
    """A Pinecone operation failed for good (after retries); nothing was published."""


@dataclass(frozen=True)
class PineconeOptions:
    """Where the index is and how to write to it (see Settings for each field's meaning)."""

    index_name: str = "patientinsight"
    api_key: str | None = None
    controller_host: str | None = None
    cloud: str = "aws"
    region: str = "us-east-1"
    batch_size: int = 100
    concurrency: int = 8
    max_retries: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 30.0
    ready_timeout_s: float = 120.0


def resolve_credentials(conn_id: str | None) -> tuple[str | None, str | None]:
    """(API key, control-plane host) from the Airflow connection when there is one, else the
    environment (PINECONE_API_KEY; the SDK reads PINECONE_CONTROLLER_HOST itself). Never logged."""
    if conn_id:
        try:
            from airflow.exceptions import AirflowNotFoundException
            from airflow.providers.pinecone.hooks.pinecone import PineconeHook
        except ImportError:
            log.info("Airflow's Pinecone provider is not installed: the API key comes from PINECONE_API_KEY")
        else:
            try:
                conn = PineconeHook(conn_id=conn_id).conn
            except AirflowNotFoundException:
                log.info("no Airflow connection %s: the API key comes from PINECONE_API_KEY", conn_id)
            else:
                if conn.password:
                    return conn.password, conn.host or None
    return os.environ.get("PINECONE_API_KEY") or None, None


def _is_retryable(exc: BaseException) -> bool:
    from pinecone.errors.exceptions import ApiError, PineconeConnectionError, PineconeTimeoutError

    if isinstance(exc, (PineconeConnectionError, PineconeTimeoutError)):
        return True
    return isinstance(exc, ApiError) and (exc.status_code == 429 or exc.status_code >= 500)


def with_retries(call: Callable[[], T], what: str, max_retries: int, backoff_s: float) -> T:
    """`call()`, retried on 429, 5xx and connection errors with exponential backoff and full jitter."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Exception as exc:
            if not _is_retryable(exc) or attempt == max_retries:
                raise PineconeIndexError(f"{what} failed after {attempt + 1} attempt(s): {exc}") from exc
            delay = backoff_s * 2**attempt * (0.5 + random.random() / 2)
            log.warning("%s: %s; retry %d/%d in %.2fs", what, type(exc).__name__, attempt + 1, max_retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def pinecone_filter(filters: Filters | None) -> dict[str, Any] | None:
    """The metadata filter that means what Filters.mask means in the embedded index."""
    if filters is None:
        return None
    out: dict[str, Any] = {}
    age: dict[str, float] = {}
    if filters.age_min is not None:
        age["$gte"] = float(filters.age_min)
    if filters.age_max is not None:
        age["$lte"] = float(filters.age_max)
    if age:
        out["age_years"] = age
    if filters.sex is not None:
        out["sex"] = {"$eq": filters.sex.upper()}
    return out or None


def _vector_id(uid: str, chunk: int) -> str:
    return f"{uid}#{chunk}"


def _uid_chunk(vector_id: str) -> tuple[str, int]:
    uid, _, chunk = vector_id.rpartition("#")
    return uid, int(chunk)


def _metadata(uid: str, chunk: int, content_hash: str, age: Any, sex: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "chunk": chunk, "content_hash": str(content_hash)}
    if age is not None and not (isinstance(age, float) and math.isnan(age)) and age is not pd.NA:
        meta["age_years"] = float(age)
    if isinstance(sex, str) and sex:
        meta["sex"] = sex
    return meta


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
        return [(*_uid_chunk(m.id), float(m.score)) for m in response.matches]

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

    def commit(
        self,
        extras: Callable[[Path, pd.DataFrame], None] | None = None,
        staged_extras: Callable[[Path], None] | None = None,
    ) -> str:
        index, opts = self.index, self.index.options
        replaced = set(self._deletes)
        for batch in self._batches:
            replaced.update(batch.records["uid"])
        frames: list[pd.DataFrame] = []
        kept = pd.DataFrame(columns=[*META_COLUMNS, "chunk_count"])
        if self.base is not None:
            base = pd.read_parquet(index.versions_dir / self.base / "records.parquet")
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
        version = datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%fZ")
        namespace = version
        vectors = int(records["chunk_count"].sum()) if len(records) else 0
        index.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = index.versions_dir / f".staging-{version}"
        data = index.data_plane(dimension=dim)
        try:
            tasks = [*self._carry_tasks(kept, namespace), *self._upsert_tasks(namespace)]
            written = index.run_batches(tasks, f"upsert into {opts.index_name}/{namespace}")
            if written != vectors:
                raise PineconeIndexError(f"wrote {written} vectors into {namespace}, expected {vectors}")
            self._wait_until_counted(data, namespace, vectors)
            staging.mkdir()
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
            if extras is not None:
                extras(staging, records)
            if staged_extras is not None:  # as EmbeddedBuilder.commit: from staging/records.parquet
                staged_extras(staging)
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
            staging.rename(index.versions_dir / version)  # a version appears whole or not at all
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
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
            response = with_retries(
                lambda: data.upsert(vectors=vectors, namespace=namespace),
                f"upsert of {len(vectors)} vectors into {opts.index_name}/{namespace}",
                opts.max_retries,
                opts.backoff_s,
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
                    items.append({
                        "id": _vector_id(str(rec.uid), chunk),
                        "values": vectors[row].tolist(),
                        "metadata": _metadata(str(rec.uid), chunk, rec.content_hash, rec.age_years, rec.sex),
                    })  # fmt: skip
                    row += 1
        return [self._upsert_call(namespace, group) for group in self._batches_of(items)]

    def _carry_tasks(self, kept: pd.DataFrame, namespace: str) -> list[Callable[[], int]]:
        """Copy the kept base records' vectors into the new namespace: from the base's vectors.npy
        when the embedded index built it (switching backends re-embeds nothing), else fetch + upsert."""
        if self.base is None or kept.empty:
            return []
        base_dir = self.index.versions_dir / self.base
        if (base_dir / "vectors.npy").exists():
            return self._carry_from_file(base_dir, kept, namespace)
        source = json.loads((base_dir / "manifest.json").read_text())["namespace"]
        ids = [
            _vector_id(str(uid), c) for uid, n in zip(kept["uid"], kept["chunk_count"], strict=True) for c in range(n)
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
                items.append({
                    "id": _vector_id(str(rec.uid), chunk),
                    "values": np.asarray(matrix[start + chunk], dtype=np.float32).tolist(),
                    "metadata": _metadata(str(rec.uid), chunk, rec.content_hash, rec.age_years, rec.sex),
                })  # fmt: skip
        return [self._upsert_call(namespace, group) for group in self._batches_of(items)]

    def _copy_call(self, source: str, namespace: str, ids: list[str]) -> Callable[[], int]:
        data, opts = self.index.data_plane(), self.index.options

        def copy() -> int:
            fetched = with_retries(
                lambda: data.fetch(ids=ids, namespace=source),
                f"fetch of {len(ids)} vectors from {opts.index_name}/{source}",
                opts.max_retries,
                opts.backoff_s,
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
            stats = with_retries(
                lambda: data.describe_index_stats(), f"stats of {opts.index_name}", opts.max_retries, opts.backoff_s
            )
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
