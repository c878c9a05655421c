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
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

from patientinsight.index.pinecone_support import PineconeIndexError

if TYPE_CHECKING:
    from pinecone import Index

    from patientinsight.index.pinecone_client import PineconeClient

log = logging.getLogger(__name__)

PROBES = 16  # written vectors searched for where the service reports no positions


def wait_until_searchable(
    client: PineconeClient, data: Index, namespace: str, dim: int, positions: list[int | None], sample: list[str]
) -> None:
    """Return once searches of `namespace` see every write whose answer reported one of `positions`
    (None: the answer reported none; then the `sample` ids are searched for)."""
    if not positions:
        return
    if all(p is not None for p in positions):
        target = max(p for p in positions if p is not None)
        probe = [1.0] + [0.0] * (dim - 1)  # any vector: only the answer's position is read

        def caught_up() -> bool:
            query = partial(data.query, vector=probe, top_k=1, namespace=namespace)
            answer = client.retried(query, f"query {namespace}")
            return answer.response_info is not None and answer.response_info.is_reconciled(target)

        _poll(client, caught_up, f"searches of {namespace} had not reached log position {target}")
        return
    log.warning("Pinecone reported no log positions: searching for %d written vectors instead", len(sample))
    pending = set(sample)

    def all_found() -> bool:
        fetched = client.retried(lambda: data.fetch(ids=sorted(pending), namespace=namespace), f"fetch {namespace}")
        for vid, vector in fetched.vectors.items():
            meta = vector.metadata or {}
            flt = {key: {"$eq": meta[key]} for key in ("uid", "chunk", "content_hash")}
            search = partial(data.query, vector=list(vector.values), top_k=1, namespace=namespace, filter=flt)
            answer = client.retried(search, f"query {namespace}")
            if any(match.id == vid for match in answer.matches):
                pending.discard(vid)
        return not pending

    _poll(client, all_found, f"written vectors were not all searchable in {namespace}")


def _poll(client: PineconeClient, done: Callable[[], bool], failure: str) -> None:
    """`done` asked again, 50 ms after the first answer and twice as long each time (at most 2 s), until
    it says yes or `ready_timeout_s` has passed (tenacity, as the retries of pinecone_retries)."""
    timeout = client.options.ready_timeout_s
    waiting = Retrying(
        retry=retry_if_result(lambda ready: not ready),
        wait=wait_exponential(multiplier=0.05, max=2.0),
        stop=stop_after_delay(timeout),
    )
    try:
        waiting(done)
    except RetryError:
        raise PineconeIndexError(f"{failure} after {timeout:.0f}s") from None
