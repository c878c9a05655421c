"""A stand-in for a paid service: Pinecone's REST API (version 2026-07) as the official `pinecone` SDK
10.2.0 sends it, in memory, for the contract tests and the benchmarks. Not Pinecone: no ANN, exact
cosine scores (ties broken by id), eventual consistency only when asked for.

One server plays both planes; the index host it reports is its own address.
Control plane: GET /indexes, GET /indexes/{name}, POST /indexes (schema + deployment), DELETE /indexes/{name}.
Data plane: POST /vectors/upsert, POST /query (topK, vector, namespace, metadata filter), GET /vectors/fetch,
POST /vectors/delete (ids or deleteAll; 404 for a namespace it does not hold).
Every request needs the `Api-Key` header. Faults: `fail(path, status, times)` answers the next `times`
requests to `path` with `status` (times=None: for ever), with a Retry-After header when asked.
`latency_s` delays every data-plane answer, to stand for the network in the benchmark.
`visible_after_s` makes upserted vectors visible to query only after that long, as Pinecone's eventual
consistency does (0: at once).
Log positions, as Pinecone reports them for read-your-writes: every upsert and delete answer carries
the position it was committed at (`x-pinecone-lsn-committed`), every query answer the highest position
whose writes are all visible (`x-pinecone-lsn-reconciled`); `report_lsn=False` leaves them out.
Each namespace keeps its vectors as rows of one float32 matrix, so a query costs one matrix-vector
product, as a real service's search does not cost a Python loop over every vector.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from tests.http_server import JsonHandler, LocalServer

MAX_VECTORS_PER_UPSERT = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024


@dataclass
class Fault:
    status: int
    times: int | None
    retry_after: str | None = None
    after: int = 0  # requests let through before the fault starts


class StoredNamespace(Mapping[str, tuple[np.ndarray, dict[str, Any]]]):
    """One namespace's vectors: rows of a growing float32 matrix, with their ids, metadata, norms and
    write times; a deleted row is dead until the matrix is compacted. Reads as id -> (values, metadata)."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.row_of: dict[str, int] = {}
        self.ids: list[str] = []
        self.metas: list[dict[str, Any]] = []
        self.values = np.empty((0, dimension), dtype=np.float32)
        self.norms = np.empty(0, dtype=np.float32)
        self.written = np.empty(0, dtype=np.float64)
        self.alive = np.empty(0, dtype=bool)

    def __getitem__(self, vid: str) -> tuple[np.ndarray, dict[str, Any]]:
        row = self.row_of[vid]
        return self.values[row], self.metas[row]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.row_of))

    def __len__(self) -> int:
        return len(self.row_of)

    def put(self, rows: dict[str, tuple[np.ndarray, dict[str, Any]]], now: float) -> None:
        fresh = [vid for vid in rows if vid not in self.row_of]
        self._reserve(len(self.ids) + len(fresh))
        for vid in fresh:
            self.row_of[vid] = len(self.ids)
            self.ids.append(vid)
            self.metas.append({})
        for vid, (values, meta) in rows.items():
            row = self.row_of[vid]
            self.values[row], self.metas[row] = values, meta
            self.norms[row] = np.linalg.norm(values)
            self.written[row], self.alive[row] = now, True

    def drop(self, vids: list[str]) -> None:
        for vid in vids:
            row = self.row_of.pop(vid, None)
            if row is not None:
                self.alive[row] = False
        if len(self.ids) > 1024 and len(self.row_of) < len(self.ids) // 2:
            self._compact()

    def _reserve(self, rows: int) -> None:
        if rows <= len(self.values):
            return
        size = max(rows, int(len(self.values) * 1.5), 1024)
        for name in ("values", "norms", "written", "alive"):
            old = getattr(self, name)
            grown = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def _compact(self) -> None:
        keep = sorted(self.row_of.values())
        self.ids = [self.ids[r] for r in keep]
        self.metas = [self.metas[r] for r in keep]
        self.values, self.norms = self.values[keep], self.norms[keep]
        self.written, self.alive = self.written[keep], self.alive[keep]
        self.row_of = {vid: row for row, vid in enumerate(self.ids)}

    def visible(self, before: float) -> np.ndarray:
        """The rows alive and written before `before`."""
        used = len(self.ids)
        return np.flatnonzero(self.alive[:used] & (self.written[:used] <= before))


@dataclass
class StoredIndex:
    name: str
    dimension: int
    metric: str
    cloud: str
    region: str
    namespaces: dict[str, StoredNamespace] = field(default_factory=dict)


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(value == operand)
    if op == "$ne":
        return bool(value != operand)
    if op == "$in":
        return value in operand
    if op == "$nin":
        return value not in operand
    if op == "$exists":
        return (value is not None) == bool(operand)
    if value is None or isinstance(value, (str, bool)) != isinstance(operand, (str, bool)):
        return False
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    if op == "$lte":
        return bool(value <= operand)
    raise ValueError(f"unsupported filter operator {op}")


def matches(metadata: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    """Pinecone's metadata filter language: implicit AND of fields, $and/$or, and the comparison
    operators. A missing field fails every comparison but $ne, $nin and $exists: false."""
    if not flt:
        return True
    for key, condition in flt.items():
        if key == "$and":
            if not all(matches(metadata, c) for c in condition):
                return False
        elif key == "$or":
            if not any(matches(metadata, c) for c in condition):
                return False
        else:
            value = metadata.get(key)
            ops = condition if isinstance(condition, dict) else {"$eq": condition}
            for op, operand in ops.items():
                if value is None and op in ("$ne", "$nin"):
                    continue
                if not _compare(value, op, operand):
                    return False
    return True


class PineconeStandIn(LocalServer):
    def __init__(
        self,
        api_key: str = "pcsk-standin",
        latency_s: float = 0.0,
        visible_after_s: float = 0.0,
        report_lsn: bool = True,
    ) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.visible_after_s = visible_after_s
        self.report_lsn = report_lsn
        self.lsn = 0  # the last write's log position
        self.lsn_times: list[float] = []  # when each position was written (index lsn - 1)
        self.indexes: dict[str, StoredIndex] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.api_versions: set[str] = set()
        self.faults: dict[str, Fault] = {}
        self.lock = threading.Lock()
        super().__init__(_Handler, standin=self)

    def fail(
        self, path: str, status: int, times: int | None = 1, retry_after: str | None = None, after: int = 0
    ) -> None:
        with self.lock:
            self.faults[path] = Fault(status, times, retry_after, after)

    def heal(self) -> None:
        with self.lock:
            self.faults.clear()

    def count(self, path: str, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for _, p, s in self.requests if p == path and (status is None or s == status))

    def namespace(self, index: str, namespace: str) -> Mapping[str, tuple[np.ndarray, dict[str, Any]]]:
        return self.indexes[index].namespaces.get(namespace, {})

    # -- the HTTP side ---------------------------------------------------------------------------
    def _model(self, index: StoredIndex) -> dict[str, Any]:
        return {
            "name": index.name,
            "host": self.url,
            "status": {"ready": True, "state": "Ready"},
            "schema": {
                "fields": {"_values": {"type": "dense_vector", "dimension": index.dimension, "metric": index.metric}}
            },
            "deployment": {"deployment_type": "managed", "cloud": index.cloud, "region": index.region},
            "deletion_protection": "disabled",
            "tags": None,
        }

    def _data_index(self) -> StoredIndex:
        # The data plane is addressed by host; this stand-in serves its one data-plane index.
        (index,) = self.indexes.values()
        return index

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "indexes":
            return (*self._control(method, parts, body), {})
        if self.latency_s:
            time.sleep(self.latency_s)
        if not self.indexes:
            return 404, {"code": 5, "message": "Index not found", "details": []}, {}
        index = self._data_index()
        with self.lock:
            if (method, path) == ("POST", "/vectors/upsert"):
                return self._committed(*self._upsert(index, body))
            if (method, path) == ("POST", "/query"):
                return self._reconciled(*self._query(index, body))
            if (method, path) == ("GET", "/vectors/fetch"):
                return (*self._fetch(index, query), {})
            if (method, path) == ("POST", "/vectors/delete"):
                return self._committed(*self._delete(index, body))
        return 404, {"code": 5, "message": f"no route {method} {path}", "details": []}, {}

    # -- log positions (called under the lock) ----------------------------------------------------
    def _committed(self, status: int, payload: Any) -> tuple[int, Any, dict[str, str]]:
        if status != 200:
            return status, payload, {}
        self.lsn += 1
        self.lsn_times.append(time.monotonic())
        return status, payload, {"x-pinecone-lsn-committed": str(self.lsn)} if self.report_lsn else {}

    def _reconciled(self, status: int, payload: Any) -> tuple[int, Any, dict[str, str]]:
        if status != 200 or not self.report_lsn:
            return status, payload, {}
        # Write times only grow: the positions visible now are a prefix.
        visible = bisect.bisect_right(self.lsn_times, time.monotonic() - self.visible_after_s)
        return status, payload, {"x-pinecone-lsn-reconciled": str(visible)}

    def _control(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        with self.lock:
            if method == "GET" and len(parts) == 1:
                return 200, {"indexes": [self._model(i) for i in self.indexes.values()]}
            if method == "POST" and len(parts) == 1:
                name = body.get("name")
                if name in self.indexes:
                    return 409, {
                        "error": {"code": "ALREADY_EXISTS", "message": f"Resource {name} already exists"},
                        "status": 409,
                    }
                if len(self.indexes) == 1:
                    return 403, {
                        "error": {"code": "FORBIDDEN", "message": "the stand-in serves one index"},
                        "status": 403,
                    }
                (field_name, spec), *_ = body["schema"]["fields"].items()
                if field_name != "_values" or spec.get("type") != "dense_vector" or int(spec.get("dimension", 0)) < 1:
                    return 400, {
                        "error": {"code": "INVALID_ARGUMENT", "message": "a dense _values field is required"},
                        "status": 400,
                    }
                deployment = body.get("deployment") or {"cloud": "aws", "region": "us-east-1"}
                index = StoredIndex(
                    name,
                    int(spec["dimension"]),
                    spec.get("metric", "cosine"),
                    deployment["cloud"],
                    deployment["region"],
                )
                self.indexes[name] = index
                return 201, self._model(index)
            name = parts[1] if len(parts) > 1 else ""
            if name not in self.indexes:
                return 404, {"error": {"code": "NOT_FOUND", "message": f"Resource {name} not found"}, "status": 404}
            if method == "GET":
                return 200, self._model(self.indexes[name])
            if method == "DELETE":
                del self.indexes[name]
                return 202, None
        return 404, {"error": {"code": "NOT_FOUND", "message": "no such route"}, "status": 404}

    def _upsert(self, index: StoredIndex, body: dict[str, Any]) -> tuple[int, Any]:
        vectors = body.get("vectors") or []
        if len(vectors) > MAX_VECTORS_PER_UPSERT:
            return 400, {"code": 3, "message": f"Batch size exceeds {MAX_VECTORS_PER_UPSERT}", "details": []}
        rows = {}
        for v in vectors:
            values = np.asarray(v.get("values") or [], dtype=np.float32)
            if len(values) != index.dimension:
                return 400, {
                    "code": 3,
                    "message": f"Vector dimension {len(values)} does not match the index's {index.dimension}",
                    "details": [],
                }
            meta = v.get("metadata") or {}
            if any(value is None for value in meta.values()):
                return 400, {
                    "code": 3,
                    "message": "Metadata values must be string, number, boolean or list of strings",
                    "details": [],
                }
            rows[v["id"]] = (values, meta)
        namespace = body.get("namespace", "__default__")
        if namespace not in index.namespaces:
            index.namespaces[namespace] = StoredNamespace(index.dimension)
        index.namespaces[namespace].put(rows, time.monotonic())
        return 200, {"upsertedCount": len(rows)}

    def _query(self, index: StoredIndex, body: dict[str, Any]) -> tuple[int, Any]:
        namespace = body.get("namespace", "__default__")
        query = np.asarray(body["vector"], dtype=np.float32)
        if len(query) != index.dimension:
            return 400, {"code": 3, "message": "Query vector dimension does not match the index", "details": []}
        stored = index.namespaces.get(namespace) or StoredNamespace(index.dimension)
        rows = stored.visible(time.monotonic() - self.visible_after_s)
        used = len(stored.ids)  # the product over the matrix's view: `values[rows]` would copy all of it
        denom = stored.norms[:used] * np.linalg.norm(query)
        scores = ((stored.values[:used] @ query) / np.where(denom > 0, denom, 1.0))[rows]
        out = []
        for score, row in _best(scores, rows, stored, int(body["topK"]), body.get("filter")):
            vid = stored.ids[row]
            match: dict[str, Any] = {"id": vid, "score": score, "values": []}
            if body.get("includeValues"):
                match["values"] = stored.values[row].tolist()
            if body.get("includeMetadata"):
                match["metadata"] = stored.metas[row]
            out.append(match)
        return 200, {"matches": out, "namespace": namespace, "usage": {"readUnits": 1 + len(stored) // 1000}}

    def _fetch(self, index: StoredIndex, query: dict[str, list[str]]) -> tuple[int, Any]:
        namespace = query.get("namespace", ["__default__"])[0]
        stored = index.namespaces.get(namespace) or StoredNamespace(index.dimension)
        vectors = {
            vid: {"id": vid, "values": stored[vid][0].tolist(), "metadata": stored[vid][1]}
            for vid in query.get("ids", [])
            if vid in stored
        }
        return 200, {"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1 + len(vectors) // 10}}

    def _delete(self, index: StoredIndex, body: dict[str, Any]) -> tuple[int, Any]:
        namespace = body.get("namespace") or "__default__"
        stored = index.namespaces.get(namespace)
        if stored is None:  # as Pinecone answers a delete in a namespace it does not hold
            return 404, {"code": 5, "message": "Namespace not found", "details": []}
        if body.get("deleteAll"):
            index.namespaces.pop(namespace, None)
        elif "ids" in body:
            stored.drop(list(body["ids"]))
        elif body.get("filter"):
            stored.drop([v for v, (_, meta) in stored.items() if matches(meta, body["filter"])])
        else:
            return 400, {"code": 3, "message": "Delete request must have ids, deleteAll or filter", "details": []}
        return 200, {}


def _best(
    scores: np.ndarray, rows: np.ndarray, stored: StoredNamespace, top_k: int, flt: dict[str, Any] | None
) -> list[tuple[float, int]]:
    """The top_k (score, row) pairs that pass the filter, best first, equal scores in id order."""
    if top_k <= 0 or len(rows) == 0:
        return []
    if flt:  # walk down the ranking until top_k pass (and the ties of the last one)
        chosen: list[tuple[float, int]] = []
        for i in np.argsort(-scores, kind="stable"):
            score = float(scores[i])
            if len(chosen) >= top_k and score < chosen[-1][0]:
                break
            if matches(stored.metas[rows[i]], flt):
                chosen.append((score, int(rows[i])))
    else:  # the top_k by partition, and every score tied with the last of them
        k = min(top_k, len(scores))
        floor = scores[np.argpartition(-scores, k - 1)[k - 1]]
        chosen = [(float(scores[i]), int(rows[i])) for i in np.flatnonzero(scores >= floor)]
    chosen.sort(key=lambda pair: (-pair[0], stored.ids[pair[1]]))
    return chosen[:top_k]


class _Handler(JsonHandler):
    """The HTTP side of the stand-in: the API key, the request size limit and the faults, then its routes."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    # TCP_NODELAY: an answer goes out as headers, then body; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK, about 40 ms a request on Linux, which Pinecone's own API does not cost.
    disable_nagle_algorithm = True
    standin: PineconeStandIn

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        status, payload, headers = self._answer(method, split.path, parse_qs(split.query), self.read_body())
        with self.standin.lock:
            self.standin.requests.append((method, split.path, status))
        self.send_json(status, payload, headers)

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        standin = self.standin
        version = self.headers.get("X-Pinecone-Api-Version")
        if version:
            standin.api_versions.add(version)
        if self.headers.get("Api-Key") != standin.api_key:
            return 401, {"error": {"code": "UNAUTHENTICATED", "message": "Invalid API Key"}, "status": 401}, {}
        if len(raw) > MAX_REQUEST_BYTES:
            return 413, {"code": 3, "message": "Request size exceeds 2MB", "details": []}, {}
        with standin.lock:
            fault = standin.faults.get(path)
            if fault is not None and fault.after > 0:
                fault.after -= 1
                fault = None
            elif fault is not None and fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del standin.faults[path]
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            message = "Too many requests" if fault.status == 429 else "Internal error (stand-in fault)"
            return (
                fault.status,
                {"code": 8 if fault.status == 429 else 13, "message": message, "details": []},
                headers,
            )
        body = json.loads(raw) if raw else {}
        return standin.handle(method, path, query, body)

    def do_GET(self) -> None:  # noqa: N802 (http.server calls it so)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802 (http.server calls it so)
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802 (http.server calls it so)
        self._serve("DELETE")


def standin_options(url: str, api_key: str, **overrides: Any) -> Any:
    """PineconeOptions for an index on a stand-in at `url`: the settings' defaults, short backoffs, and
    `overrides` (the library is imported here only: the benchmarks run the stand-in on its own)."""
    import dataclasses

    from patientinsight.index.pinecone_support import PineconeCredentials, PineconeOptions
    from patientinsight.settings import Settings

    options = PineconeOptions.from_settings(Settings(), PineconeCredentials(api_key, url))
    return dataclasses.replace(options, **{"backoff_s": 0.01, **overrides})
