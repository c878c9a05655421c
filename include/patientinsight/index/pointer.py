"""The CURRENT pointer of an index root: which version is published. Publishing writes it through a
`.CURRENT.<hex>` temp file and one rename, durably (index.durable), while holding `.publish.lock`; so a
temp file seen while that lock is free belongs to no live publisher: it was left by one that crashed
between writing it and the rename, and goes with the other debris (`remove_stale_temps`)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from patientinsight.index.durable import write_durably

log = logging.getLogger(__name__)

POINTER, TEMP_PREFIX, LOCK = "CURRENT", ".CURRENT.", ".publish.lock"


def read_pointer(root: Path) -> str | None:
    try:
        return (root / POINTER).read_text().strip() or None
    except FileNotFoundError:
        return None


def write_pointer(root: Path, version: str) -> None:
    """Point CURRENT at `version`: atomic for readers (os.replace), on disk once this returns."""
    with _publish_lock(root, wait=True):
        write_durably(root / POINTER, version + "\n", root / f"{TEMP_PREFIX}{uuid.uuid4().hex}")


def remove_stale_temps(root: Path, grace_s: float) -> list[Path]:
    """Remove the temp files of publishers that crashed before their rename. Only while no publisher
    holds the lock (one that does is skipped: the next pass removes what it may have left); where the
    file system has no locks, only those older than `grace_s`."""
    with _publish_lock(root, wait=False) as locked:
        if locked is None:
            return []  # a publisher is writing its temp file now
        removed = []
        for temp in root.glob(f"{TEMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if locked or time.time() - temp.stat().st_mtime >= grace_s:
                    temp.unlink()
                    removed.append(temp)
                    log.warning("removed %s, left by a publish that did not finish", temp)
        return removed


@contextlib.contextmanager
def _publish_lock(root: Path, wait: bool) -> Iterator[bool | None]:
    """The publish lock for the block: True when held, False when the file system has no locks (nothing to
    wait for), None when another process holds it and `wait` is False."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked: bool | None = True
        except BlockingIOError:
            locked = None
        except OSError:  # no locks here: publishers cannot exclude one another either
            locked = False
        yield locked
    finally:
        os.close(fd)  # and with it the lock
