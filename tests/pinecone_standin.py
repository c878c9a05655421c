"""A stand-in for a paid service: Pinecone's REST API (version 2026-07) as the official `pinecone` SDK
10.2.0 sends it, in memory, for the contract tests and the upsert benchmark. Not Pinecone: no ANN,
no eventual consistency, exact cosine scores.

One server plays both planes; the index host it reports is its own address.
Control plane: GET /indexes, GET /indexes/{name}, POST /indexes (schema + deployment), DELETE /indexes/{name}.
Data plane: POST /vectors/upsert, POST /query (topK, vector, namespace, metadata filter), GET /vectors/fetch,
POST /vectors/delete (ids or deleteAll), POST /describe_index_stats, GET /vectors/list (prefix, limit,
paginationToken).
Every request needs the `Api-Key` header. Faults: `fail(path, status, times)` answers the next `times`
requests to `path` with `status` (times=None: for ever), with a Retry-After header when asked.
`latency_s` delays every data-plane answer, to stand for the network in the benchmark.
`visible_after_s` makes upserted vectors visible to query and describe_index_stats only after that
long, as Pinecone's eventual consistency does (0: at once).
"""

from __future__ import annotations

import json
import threading
import time
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


@dataclass
class StoredIndex:
    name: str
    dimension: int
    metric: str
    cloud: str
    region: str
    namespaces: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]] = field(default_factory=dict)


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
    def __init__(self, api_key: str = "pcsk-standin", latency_s: float = 0.0, visible_after_s: float = 0.0) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.visible_after_s = visible_after_s
        self.written_at: dict[tuple[str, str], float] = {}  # (namespace, id) -> when upserted
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

    def namespace(self, index: str, namespace: str) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
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

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "indexes":
            return self._control(method, parts, body)
        if self.latency_s:
            time.sleep(self.latency_s)
        if not self.indexes:
            return 404, {"code": 5, "message": "Index not found", "details": []}
        index = self._data_index()
        with self.lock:
            if (method, path) == ("POST", "/vectors/upsert"):
                return self._upsert(index, body)
            if (method, path) == ("POST", "/query"):
                return self._query(index, body)
            if (method, path) == ("GET", "/vectors/fetch"):
                return self._fetch(index, query)
            if (method, path) == ("POST", "/vectors/delete"):
                return self._delete(index, body)
            if (method, path) == ("POST", "/describe_index_stats"):
                return self._stats(index)
            if (method, path) == ("GET", "/vectors/list"):
                return self._list(index, query)
        return 404, {"code": 5, "message": f"no route {method} {path}", "details": []}

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
        index.namespaces.setdefault(namespace, {}).update(rows)
        now = time.monotonic()
        self.written_at.update({(namespace, vid): now for vid in rows})
        return 200, {"upsertedCount": len(rows)}

    def _query(self, index: StoredIndex, body: dict[str, Any]) -> tuple[int, Any]:
        namespace = body.get("namespace", "__default__")
        stored = index.namespaces.get(namespace, {})
        query = np.asarray(body["vector"], dtype=np.float32)
        if len(query) != index.dimension:
            return 400, {"code": 3, "message": "Query vector dimension does not match the index", "details": []}
        flt = body.get("filter")
        scored = []
        for vid, (values, meta) in stored.items():
            if self._visible(namespace, vid) and matches(meta, flt):
                denom = float(np.linalg.norm(values) * np.linalg.norm(query)) or 1.0
                scored.append((float(values @ query) / denom, vid))
        scored.sort(key=lambda s: (-s[0], s[1]))
        out = []
        for score, vid in scored[: int(body["topK"])]:
            match: dict[str, Any] = {"id": vid, "score": score, "values": []}
            if body.get("includeValues"):
                match["values"] = stored[vid][0].tolist()
            if body.get("includeMetadata"):
                match["metadata"] = stored[vid][1]
            out.append(match)
        return 200, {"matches": out, "namespace": namespace, "usage": {"readUnits": 1 + len(stored) // 1000}}

    def _visible(self, namespace: str, vid: str) -> bool:
        written = self.written_at.get((namespace, vid), 0.0)
        return time.monotonic() - written >= self.visible_after_s

    def _fetch(self, index: StoredIndex, query: dict[str, list[str]]) -> tuple[int, Any]:
        namespace = query.get("namespace", ["__default__"])[0]
        stored = index.namespaces.get(namespace, {})
        vectors = {
            vid: {"id": vid, "values": stored[vid][0].tolist(), "metadata": stored[vid][1]}
            for vid in query.get("ids", [])
            if vid in stored
        }
        return 200, {"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1 + len(vectors) // 10}}

    def _delete(self, index: StoredIndex, body: dict[str, Any]) -> tuple[int, Any]:
        namespace = body.get("namespace") or "__default__"
        if body.get("deleteAll"):
            index.namespaces.pop(namespace, None)
        elif "ids" in body:
            stored = index.namespaces.get(namespace, {})
            for vid in body["ids"]:
                stored.pop(vid, None)
        elif body.get("filter"):
            stored = index.namespaces.get(namespace, {})
            for vid in [v for v, (_, meta) in stored.items() if matches(meta, body["filter"])]:
                del stored[vid]
        else:
            return 400, {"code": 3, "message": "Delete request must have ids, deleteAll or filter", "details": []}
        return 200, {}

    def _stats(self, index: StoredIndex) -> tuple[int, Any]:
        counts = {ns: sum(self._visible(ns, vid) for vid in rows) for ns, rows in index.namespaces.items()}
        namespaces = {ns: {"vectorCount": n} for ns, n in counts.items() if n}
        return 200, {
            "namespaces": namespaces,
            "dimension": index.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(n["vectorCount"] for n in namespaces.values()),
            "metric": index.metric,
            "vectorType": "dense",
        }

    def _list(self, index: StoredIndex, query: dict[str, list[str]]) -> tuple[int, Any]:
        namespace = query.get("namespace", [""])[0] or "__default__"
        prefix = query.get("prefix", [""])[0]
        limit = int(query.get("limit", ["100"])[0])
        start = int(query.get("paginationToken", ["0"])[0])
        ids = sorted(v for v in index.namespaces.get(namespace, {}) if v.startswith(prefix))
        page = ids[start : start + limit]
        payload: dict[str, Any] = {
            "vectors": [{"id": v} for v in page],
            "namespace": namespace,
            "usage": {"readUnits": 1},
        }
        if start + limit < len(ids):
            payload["pagination"] = {"next": str(start + limit)}
        return 200, payload


class _Handler(JsonHandler):
    """The HTTP side of the stand-in: the API key, the request size limit and the faults, then its routes."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
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
        status, payload = standin.handle(method, path, query, body)
        return status, payload, {}

    def do_GET(self) -> None:  # noqa: N802 (http.server calls it so)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802 (http.server calls it so)
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802 (http.server calls it so)
        self._serve("DELETE")
