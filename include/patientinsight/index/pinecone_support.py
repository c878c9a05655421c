"""The Pinecone index's settings and vocabulary: its options and error, credentials from Airflow or the
environment, and how records map onto Pinecone (metadata filters, vector ids and metadata); the
design is in index.pinecone, the retries in index.pinecone_retries.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from patientinsight.index.types import Filters

log = logging.getLogger(__name__)

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


def vector_id(uid: str, chunk: int) -> str:
    return f"{uid}#{chunk}"


def uid_chunk(vector_id: str) -> tuple[str, int]:
    uid, _, chunk = vector_id.rpartition("#")
    return uid, int(chunk)


def vector_metadata(uid: str, chunk: int, content_hash: str, age: Any, sex: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "chunk": chunk, "content_hash": str(content_hash)}
    if age is not None and not (isinstance(age, float) and math.isnan(age)) and age is not pd.NA:
        meta["age_years"] = float(age)
    if isinstance(sex, str) and sex:
        meta["sex"] = sex
    return meta
