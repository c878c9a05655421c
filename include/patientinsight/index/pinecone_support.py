"""The Pinecone index's settings and vocabulary: its options and error, credentials from Airflow or the
environment, and how records map onto Pinecone (namespaces, metadata filters, vector ids and metadata);
the design is in index.pinecone, the retries in index.pinecone_retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from patientinsight.embedding.encoder import numerics
from patientinsight.index.types import Filters

log = logging.getLogger(__name__)

VECTOR_FIELD = "_values"  # the reserved dense field name the vectors API addresses
QUERY_TOP_K_MAX = 10_000  # Pinecone's cap on topK
FETCH_IDS = 100  # ids per fetch request: they travel in the query string, ~40 characters each
DELETE_IDS = 1000  # Pinecone's cap on ids per delete request
HASH_CHARS = 16  # of the content hash in a vector id: 64 bits tell a record's contents apart

# A version's manifest says how its vectors are laid out. SHARED: content-addressed ids in the one
# namespace of its lake and embedding (`shared_namespace`), shared by every version of the lake that
# holds the record's contents. Versions of earlier releases have no layout: a namespace of their own,
# ids `<uid>#<chunk>`.
LAYOUT = "vector_layout"
SHARED = "shared"


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
    cache_vectors: int = 20_000  # fetched vectors a process keeps (index.pinecone_cache): 30 MiB at 384 floats


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


# What a version's vectors depend on besides the records' contents, as embedding.encoder.same_embedding
# compares them (and its numerics, normalized there): versions that agree share vectors.
EMBEDDING_KEYS = ("model", "strategy", "chunk_tokens", "chunk_overlap", "max_seq_length", "dim")


def shared_namespace(manifest: dict[str, Any], lake: str) -> str:
    """The namespace of every version of the lake `lake` (its id) embedded as `manifest` says: a lake's
    pruning knows only its own versions, so no other lake's versions may share its vectors."""
    identity = {**{k: manifest.get(k) for k in EMBEDDING_KEYS}, "numerics": numerics(manifest)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"vectors-{lake}-{digest}"


def is_shared(manifest: dict[str, Any]) -> bool:
    return manifest.get(LAYOUT) == SHARED


def vector_id(uid: str, chunk: int, content_hash: str | None = None) -> str:
    """`<uid>#<hash>#<chunk>` in the shared layout (content_hash given), `<uid>#<chunk>` before it."""
    if content_hash is None:
        return f"{uid}#{chunk}"
    return f"{uid}#{content_hash[:HASH_CHARS]}#{chunk}"


def uid_chunk(vector_id: str) -> tuple[str, int]:
    """The parts of an id of the earlier layout: uid, chunk."""
    uid, _, chunk = vector_id.rpartition("#")
    return uid, int(chunk)


def uid_hash_chunk(vector_id: str) -> tuple[str, str, int]:
    """The parts of a shared-layout id: uid, content hash prefix, chunk."""
    uid, content, chunk = vector_id.rsplit("#", 2)
    return uid, content, int(chunk)


def vector_metadata(uid: str, chunk: int, content_hash: str, age: Any, sex: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "chunk": chunk, "content_hash": str(content_hash)}
    if age is not None and not (isinstance(age, float) and math.isnan(age)) and age is not pd.NA:
        meta["age_years"] = float(age)
    if isinstance(sex, str) and sex:
        meta["sex"] = sex
    return meta
