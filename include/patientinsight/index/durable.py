"""Writes that survive a power loss: a file's data reaches the disk before a rename makes it count, and
the folder holding a rename is synced after it, so the new name is on disk too. Without this, a
journaling file system may keep the rename but not the data, and a crash leaves an empty file under
the final name (ext4's delayed allocation; XFS)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk. Some network and FUSE file systems refuse
    to sync a folder (EINVAL, or not supported): there the folder's entries are as durable as that file
    system makes them, and the write goes on."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP) or not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Every file and folder under `folder`, and `folder` itself: each folder after what it holds. Files
    already on disk (a base's hard-linked segments) cost a system call, not a write."""
    for parent, _folders, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(Path(parent, name))
        fsync_path(Path(parent))


def write_durably(path: Path, text: str, temp: Path) -> None:
    """Replace `path` with `text`, whole, through `temp` (a name beside it): a reader, or the disk after
    a crash, has the old contents or the new ones, never an empty or partial file."""
    try:
        with temp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
