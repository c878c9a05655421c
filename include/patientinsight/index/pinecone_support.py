"""The Pinecone index's settings and vocabulary: its options (from Settings and the credentials the caller
passes in) and error, and how records map onto Pinecone (namespaces, metadata filters, vector ids and
metadata); the design is in index.pinecone, the client and its retries in index.pinecone_client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from patientinsight.embedding.identity import EMBEDDING_KEYS, numerics
from patientinsight.index.types import Filters
from patientinsight.settings import Settings

log = logging.getLogger(__name__)

VECTOR_FIELD = "_values"  # the reserved dense field name the vectors API addresses
QUERY_TOP_K_MAX = 10_000  # Pinecone's cap on topK
FETCH_IDS = 100  # ids per fetch request: they travel in the query string, ~40 characters each
DELETE_IDS = 1000  # Pinecone's cap on ids per delete request
HASH_CHARS = 16  # of the content hash in a vector id: 64 bits tell a record's contents apart
FOLDER = "pinecone"  # <root>/pinecone/: the lake's id (pinecone_keys), the builds' lock and journals (pinecone_gc)

# A version's manifest says how its vectors are laid out. SHARED: content-addressed ids in the one
# namespace of its lake and embedding (`shared_namespace`), shared by every version of the lake that
# holds the record's contents. Versions of earlier releases have no layout: a namespace of their own,
# ids `<uid>#<chunk>`.
LAYOUT = "vector_layout"
SHARED = "shared"


class PineconeIndexError(RuntimeError):
    """A Pinecone operation failed for good (after retries); nothing was published."""


class PineconeCredentials(NamedTuple):
    """What the caller found for Pinecone (the Airflow connection's password and host); None: nothing."""

    api_key: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class PineconeOptions:
    """Where the index is and how to write to it: Settings' pinecone_* fields (see Settings for each one's
    meaning, and its defaults) and the credentials the caller passed in."""

    index_name: str
    cloud: str
    region: str
    batch_size: int
    concurrency: int
    max_retries: int
    backoff_s: float
    timeout_s: float
    ready_timeout_s: float
    api_key: str | None = None  # None: PINECONE_API_KEY (index.pinecone_client)
    controller_host: str | None = None
    cache_vectors: int = 20_000  # fetched vectors a process keeps (index.pinecone_cache): 30 MiB at 384 floats

    @classmethod
    def from_settings(cls, settings: Settings, credentials: PineconeCredentials | None = None) -> PineconeOptions:
        """The settings' options; the host is the `pinecone_host` setting, else the credentials' host."""
        api_key, host = credentials or PineconeCredentials()
        return cls(
            index_name=settings.pinecone_index_name,
            cloud=settings.pinecone_cloud,
            region=settings.pinecone_region,
            batch_size=settings.pinecone_batch_size,
            concurrency=settings.pinecone_concurrency,
            max_retries=settings.pinecone_max_retries,
            backoff_s=settings.pinecone_backoff_s,
            timeout_s=settings.pinecone_timeout_s,
            ready_timeout_s=settings.pinecone_ready_timeout_s,
            api_key=api_key,
            controller_host=settings.pinecone_host or host,
        )


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


def shared_namespace(manifest: dict[str, Any], lake: str) -> str:
    """The namespace of every version of the lake `lake` (its id) embedded as `manifest` says: a lake's
    pruning knows only its own versions, so no other lake's versions may share its vectors. Versions
    that embedding.identity.same_embedding calls the same (EMBEDDING_KEYS, numerics) share vectors."""
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
