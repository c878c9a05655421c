"""Deleting from the shared namespaces (index.pinecone has the design): a vector goes only when no kept
version references it and no build is writing.

- A build holds `<root>/pinecone/writes.lock` shared from before its first upsert until its version is
  committed, and first lists what it is about to write in a journal (`<root>/pinecone/writes/<id>/`,
  claimed like a staging folder, index.versions.BuildClaim).
- Deleting takes that lock exclusively and never waits for it: while a build writes, nothing is deleted
  (a vector it sends may be one that a pruned version held, the same contents written again), and the
  pruned version's folder stays for the next prune. Its manifest goes before the lock is let go: the
  next build must not skip contents as held that were just deleted.
- A journal whose build is over (failed or killed: a committed build removes its own) names the only
  vectors that can be in Pinecone without a version: the next prune deletes those no kept version
  references, then the journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from patientinsight.index.pinecone_keys import (
    KEY_COLUMNS,
    referenced,
    unreferenced,
    vector_ids,
    version_keys,
    versions_in,
)
from patientinsight.index.pinecone_support import FOLDER, PineconeIndexError
from patientinsight.index.versions import BuildClaim, VersionStore, owned_by_live_build

if TYPE_CHECKING:
    from patientinsight.index.pinecone_client import PineconeClient

log = logging.getLogger(__name__)

LOCK, WRITES = "writes.lock", "writes"  # in FOLDER
JOURNAL = "vectors.parquet"  # KEY_COLUMNS of the records whose vectors the build sends
NAMESPACE_KEY = b"namespace"  # in the journal's schema metadata
JOURNAL_SCHEMA = pa.schema([("uid", pa.string()), ("content_hash", pa.string()), ("chunk_count", pa.int64())])


class Journal:
    """What one build is about to write (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record(self, namespace: str, tables: list[pa.Table]) -> None:
        rows = [t.select(list(KEY_COLUMNS)).cast(JOURNAL_SCHEMA) for t in tables]
        table = pa.concat_tables(rows) if rows else JOURNAL_SCHEMA.empty_table()
        # Whole or absent: a build killed while writing it has not sent anything yet.
        draft = self.folder / f".{JOURNAL}"
        pq.write_table(table.replace_schema_metadata({NAMESPACE_KEY: namespace.encode()}), draft)
        draft.replace(self.folder / JOURNAL)


def _lock_fd(root: Path) -> int:
    folder = root / FOLDER
    (folder / WRITES).mkdir(parents=True, exist_ok=True)
    return os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def writing(root: Path) -> Iterator[Journal]:
    """For the block: this build writes (the lock held shared) and its journal exists; a block that
    ends normally has committed its version, so the journal goes with it."""
    fd = _lock_fd(root)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a prune deletes, which is short
        folder = root / FOLDER / WRITES / uuid.uuid4().hex
        folder.mkdir()
        claim = BuildClaim(folder)
        try:
            yield Journal(folder)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            claim.release()
    finally:
        os.close(fd)  # and with it the lock


@contextlib.contextmanager
def deleting(root: Path) -> Iterator[bool]:
    """Whether deleting may go ahead (no build writing), for the block."""
    fd = _lock_fd(root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def release(client: PineconeClient, versions: VersionStore, version: str, manifest: dict[str, Any]) -> bool:
    """Delete what only this pruned version references from its shared namespace; False (the folder
    stays, the next prune tries again) while a build writes or Pinecone fails."""
    namespace = str(manifest["namespace"])
    folder = versions.path(version)
    with deleting(versions.root) as free:
        if not free:
            log.info("a build is writing to Pinecone: version %s is pruned at the next publish", version)
            return False
        try:
            _delete_vectors_of(client, versions, folder, namespace)
        except PineconeIndexError as exc:
            log.warning("could not remove version %s from Pinecone: %s", version, exc)
            return False
        # Its vectors are gone: no build may count on them from now on (pinecone_keys.versions_in skips
        # a folder without manifest), before the lock lets builds write again and the folder goes.
        (folder / "manifest.json").unlink(missing_ok=True)
    return True


def _delete_vectors_of(client: PineconeClient, versions: VersionStore, folder: Path, namespace: str) -> None:
    """Delete what only the version in `folder` references; the namespace whole where it is the last."""
    others = [f for f in versions_in(versions, namespace) if f != folder]
    if not others:
        client.drop_namespace(namespace)
        return
    gone = unreferenced(version_keys(folder), referenced(others))
    deleted = client.delete_ids(namespace, vector_ids(gone))
    log.info("pruned version %s from %s: %d vectors no kept version uses", folder.name, namespace, deleted)


def collect_orphans(client: PineconeClient, versions: VersionStore) -> int:
    """Delete what builds that did not commit wrote and no kept version references; the vectors deleted.
    Skipped (0) while a build writes: the next prune collects them."""
    writes = versions.root / FOLDER / WRITES
    grace = versions.debris_grace_s
    ended = [j for j in sorted(writes.iterdir()) if not owned_by_live_build(j, grace)] if writes.is_dir() else []
    if not ended:
        return 0
    deleted = 0
    with deleting(versions.root) as free:
        if not free:
            return 0
        kept: dict[str, pa.Array] = {}
        for journal in ended:
            path = journal / JOURNAL
            if path.exists():
                table = pq.read_table(path)
                namespace = (table.schema.metadata or {})[NAMESPACE_KEY].decode()
                if namespace not in kept:
                    kept[namespace] = referenced(versions_in(versions, namespace))
                try:
                    deleted += client.delete_ids(namespace, vector_ids(unreferenced(table, kept[namespace])))
                except PineconeIndexError as exc:  # the journal stays: the next prune tries again
                    log.warning("could not remove what an unfinished build wrote to Pinecone: %s", exc)
                    continue
            shutil.rmtree(journal, ignore_errors=True)
    if deleted:
        log.warning("removed %d vectors from Pinecone that builds which did not finish left behind", deleted)
    return deleted
