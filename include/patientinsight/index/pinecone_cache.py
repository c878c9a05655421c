"""Vectors fetched from Pinecone, kept by id for the readers of one process (least recently used first
out). Safe because an id's vector never changes: in the shared layout the id is the record's contents,
and a build never rewrites what a kept version holds (index.pinecone); an id of the earlier layout
names one vector of one immutable namespace. A reranker's pool is fetched for each version the gate
compares, and popular cases recur across a service's queries: each is fetched once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np


class VectorCache:
    """At most `capacity` float32 vectors (384 floats: 1.5 KiB each), keyed by (namespace, id)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def get(self, namespace: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The ones held, each marked as just used."""
        out = {}
        with self._lock:
            for vid in ids:
                vector = self._vectors.get((namespace, vid))
                if vector is not None:
                    self._vectors.move_to_end((namespace, vid))
                    out[vid] = vector
        return out

    def put(self, namespace: str, vectors: dict[str, np.ndarray]) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            for vid, vector in vectors.items():
                self._vectors[(namespace, vid)] = vector
                self._vectors.move_to_end((namespace, vid))
            while len(self._vectors) > self.capacity:
                self._vectors.popitem(last=False)
