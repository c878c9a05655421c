"""Waiting until Pinecone's searches see what a build wrote, before its version may appear (and so
before the gate evaluates it): Pinecone is eventually consistent.

Read-your-writes by log position, as Pinecone documents it: each upsert's answer carries the position it
was committed at (`x-pinecone-lsn-committed`), each query's answer how far the index has caught up
(`x-pinecone-lsn-reconciled`); once a query reports the highest position of the build's upserts, every
one of them is searchable. Counting the namespace's vectors, as a namespace of one version's own allowed,
says nothing in a shared namespace (other versions' vectors, contents written again). Where the service
reports no positions, a sample of the written vectors is searched for, each by its own values and
metadata, until every one is found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from patientinsight.index.pinecone_support import PineconeIndexError

if TYPE_CHECKING:
    from pinecone import Index

    from patientinsight.index.pinecone import PineconeIndex

log = logging.getLogger(__name__)

PROBES = 16  # written vectors searched for where the service reports no positions


def wait_until_searchable(
    index: PineconeIndex, data: Index, namespace: str, dim: int, positions: list[int | None], sample: list[str]
) -> None:
    """Return once searches of `namespace` see every write whose answer reported one of `positions`
    (None: the answer reported none; then the `sample` ids are searched for)."""
    if not positions:
        return
    if all(p is not None for p in positions):
        target = max(p for p in positions if p is not None)
        probe = [1.0] + [0.0] * (dim - 1)  # any vector: only the answer's position is read

        def caught_up() -> bool:
            answer = index.retried(lambda: data.query(vector=probe, top_k=1, namespace=namespace), f"query {namespace}")
            return answer.response_info is not None and answer.response_info.is_reconciled(target)

        _poll(index, caught_up, f"searches of {namespace} had not reached log position {target}")
        return
    log.warning("Pinecone reported no log positions: searching for %d written vectors instead", len(sample))
    pending = set(sample)

    def all_found() -> bool:
        fetched = index.retried(lambda: data.fetch(ids=sorted(pending), namespace=namespace), f"fetch {namespace}")
        for vid, vector in fetched.vectors.items():
            meta = vector.metadata or {}
            flt = {key: {"$eq": meta[key]} for key in ("uid", "chunk", "content_hash")}
            search = partial(data.query, vector=list(vector.values), top_k=1, namespace=namespace, filter=flt)
            answer = index.retried(search, f"query {namespace}")
            if any(match.id == vid for match in answer.matches):
                pending.discard(vid)
        return not pending

    _poll(index, all_found, f"written vectors were not all searchable in {namespace}")


def _poll(index: PineconeIndex, done: Callable[[], bool], failure: str) -> None:
    timeout = index.options.ready_timeout_s
    deadline, delay = time.monotonic() + timeout, 0.05
    while not done():
        if time.monotonic() > deadline:
            raise PineconeIndexError(f"{failure} after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
