"""The lake's version folders, whichever backend holds the vectors: staging and committing a version,
the CURRENT pointer (publish is one atomic switch), pruning old versions and removing what crashed
builds left behind.

A version is immutable once committed: it appears by renaming its whole staging folder, its files
on disk first. Publishing replaces one pointer file (index.pointer), so a reader sees the old version
or the new one, never half of one. A version the quality gate holds for a person's decision
(index.holds) is kept, whatever the number of versions, until it is approved (published) or rejected.

A build's working folders (`versions/.staging-*`, and the embedded builder's `.build-*` spill folder)
hold an owner file (`BuildClaim`) that names the build's process and host and stays locked while it
runs; the kernel drops the lock however the process dies. It stays in the folder through the rename
that commits it, so a staging folder never lacks a locked owner file while its build is live. The next
build or publish removes the folders that no live build owns, and the pointer's temp files that no
live publisher writes (`VersionStore.remove_debris`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import json
import logging
import os
import shutil
import socket
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from patientinsight.index.durable import fsync_path, fsync_tree
from patientinsight.index.holds import Holds
from patientinsight.index.pointer import read_pointer, remove_stale_temps, write_pointer
from patientinsight.index.types import StagedExtras

log = logging.getLogger(__name__)

# Called with an old version's name and manifest (None when it has none) before its folder goes:
# removes what the backend holds outside the lake; False keeps the folder for the next prune.
Release = Callable[[str, dict[str, Any] | None], bool]

OWNER_FILE = ".owner.json"  # in a build's working folder: who builds there, locked while it does
# A working folder whose owner cannot be checked from here (another host, or no owner file) counts as
# live for this long: no build runs for a day, and a live one on this host is known by its lock and pid.
DEBRIS_GRACE_S = 24 * 3600.0
STAGING_PREFIX, BUILD_PREFIX = ".staging-", ".build-"
# A working folder moved aside to be removed: renamed first, so that it is gone whole from its own name.
TRASH_PREFIX = ".trash-"
LEGACY_METRICS = ".metrics.json"  # `<version>.metrics.json`, the evaluation cache of earlier releases


def read_manifest(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "manifest.json").read_text()))


def new_version_id() -> str:
    """Version ids sort by creation time, which is what pruning keeps by."""
    return datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%fZ")


class VersionStore:
    """Versions under `root/versions/<id>/` (records.parquet, manifest.json and what the backend adds);
    `root/CURRENT` names the published one. `release` is what a backend must remove along with an
    old version (Pinecone: its namespace)."""

    def __init__(
        self,
        root: Path,
        keep_versions: int = 5,
        release: Release | None = None,
        debris_grace_s: float = DEBRIS_GRACE_S,
    ) -> None:
        self.root = Path(root)
        self.keep_versions = keep_versions
        self.versions_dir = self.root / "versions"
        self.release = release
        self.debris_grace_s = debris_grace_s
        self.holds = Holds(self.root)

    def path(self, version: str) -> Path:
        return self.versions_dir / version

    def published(self) -> str | None:
        return read_pointer(self.root)

    def manifest(self, version: str) -> dict[str, Any]:
        return read_manifest(self.path(version))

    def publish(self, version: str) -> None:
        """Point CURRENT at `version` (an approval of a held one ends its hold), then prune."""
        self._require(version)
        write_pointer(self.root, version)
        self.holds.release(version)  # published: protected as such until another is
        self.prune(keep=version)

    def hold(self, version: str) -> None:
        """Keep `version` from pruning until it is published or `release_hold` (index.holds)."""
        self._require(version)
        self.holds.hold(version)

    def release_hold(self, version: str) -> None:
        """Rejected: `version` is pruned like any other from now on."""
        self.holds.release(version)

    def _require(self, version: str) -> None:
        if not (self.path(version) / "manifest.json").exists():
            raise FileNotFoundError(f"index version {version} does not exist")

    def committed(self) -> list[str]:
        """The committed versions, oldest first: folders only (not the `<version>.metrics.json` files of
        earlier releases, nor the dot-named working folders of builds)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def prune(self, keep: str) -> None:
        """Keep the newest `keep_versions` committed versions and remove the older ones, but never `keep`,
        the published one (another run may have published since) or the base of a live build; those
        count toward the number kept. Held versions are kept and not counted: they wait for a person.
        Then remove what crashed builds left behind."""
        held = self.holds.held()
        counted = [v for v in self.committed() if v not in held]
        protected = {keep, self.published(), *self._live_bases()}
        candidates = [v for v in counted if v not in protected]
        for name in candidates[: max(0, len(counted) - self.keep_versions)]:
            if self.release is not None:
                has_manifest = (self.path(name) / "manifest.json").exists()
                manifest = read_manifest(self.path(name)) if has_manifest else None
                if not self.release(name, manifest):
                    continue  # the backend still holds it: keep the folder, the next publish retries
            shutil.rmtree(self.path(name), ignore_errors=True)
            log.info("pruned index version %s", name)
        # The evaluation cache of earlier releases, beside each version: it goes with its version.
        remaining = set(self.committed())
        for cached in self.versions_dir.glob(f"*{LEGACY_METRICS}"):
            if cached.name.removesuffix(LEGACY_METRICS) not in remaining:
                cached.unlink(missing_ok=True)
        self.remove_debris()

    def remove_debris(self) -> list[Path]:
        """Remove the working folders (staging, spill) that no live build owns, the owner files left in
        versions whose commit was killed after its rename, and the pointer's temp files that no live
        publisher writes: what builds and publishes that crashed or were killed left. A live build's
        folders stay, on this host or any other."""
        folders = [*self.root.glob(f"{BUILD_PREFIX}*"), *self.versions_dir.glob(f"{STAGING_PREFIX}*")]
        removed = [f for f in folders if f.is_dir() and self._ended(f)]
        for folder in removed:
            _remove_folder(folder)
            log.warning("removed %s, left by a build that did not finish", folder)
        for version in self.committed():
            owner = self.path(version) / OWNER_FILE
            if owner.exists() and not owned_by_live_build(owner.parent, self.debris_grace_s):
                owner.unlink(missing_ok=True)  # the build's, not the version's
        for trash in [*self.root.glob(f"{TRASH_PREFIX}*"), *self.versions_dir.glob(f"{TRASH_PREFIX}*")]:
            shutil.rmtree(trash, ignore_errors=True)  # what a removal could not finish: nothing reads it
        return removed + remove_stale_temps(self.root, self.debris_grace_s)

    def _ended(self, folder: Path) -> bool:
        """Whether no build works in `folder` any more. A staging folder with its manifest but no owner
        file is one that earlier releases committed by unlinking the owner file, then renaming: its build
        was killed in between. (A build of an earlier release still live renames a moment later: it wins
        that rename, or loses it whole and its commit fails; `_remove_folder`.)"""
        staged = folder.name.startswith(STAGING_PREFIX) and (folder / "manifest.json").exists()
        if staged and not (folder / OWNER_FILE).exists():
            return True
        return not owned_by_live_build(folder, self.debris_grace_s)

    def _live_bases(self) -> set[str]:
        """The versions live builds are reading as their base."""
        bases: set[str] = set()
        for folder in self.versions_dir.glob(f"{STAGING_PREFIX}*"):
            owner = read_owner(folder)
            if owner and owner.get("base") and owned_by_live_build(folder, self.debris_grace_s):
                bases.add(str(owner["base"]))
        return bases

    @contextlib.contextmanager
    def staging(self, base: str | None = None) -> Iterator[Path]:
        """A fresh staging folder beside the versions, claimed by this build (reading `base`) until the
        block ends; removed unless the block committed it, so nothing half-written stays behind. What
        killed builds left is removed first."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.remove_debris()
        folder = self.versions_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        folder.mkdir()
        claim = BuildClaim(folder, base)
        try:
            yield folder
        finally:
            # Committed, the folder is a version now; otherwise (failed, or left without a commit)
            # it goes, so nothing half-written stays behind.
            shutil.rmtree(folder, ignore_errors=True)
            claim.release()

    def commit(self, staging: Path, manifest: dict[str, Any], staged_extras: StagedExtras | None) -> str:
        """Add the extras (the lexical index) from the staged records, write the manifest and let the
        version appear: whole, or not at all, and on disk before it can be published."""
        if staged_extras is not None:
            staged_extras(staging)
            release_freed_memory()
        version = str(manifest["version"])
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        fsync_tree(staging)
        # The owner file, still locked, goes with the rename: the staging folder is owned to the end.
        staging.rename(self.path(version))
        fsync_path(self.versions_dir)
        # It is the build's, not the version's; if a kill keeps this from running, remove_debris does it.
        (self.path(version) / OWNER_FILE).unlink(missing_ok=True)
        return version


def _remove_folder(folder: Path) -> None:
    """Renamed aside, then removed: a build that renames the folder itself meanwhile (its commit) wins or
    loses that rename whole, so no version ever appears half removed."""
    aside = folder.with_name(f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}")  # no working folder's prefix
    try:
        folder.rename(aside)
    except FileNotFoundError:
        return  # committed or removed meanwhile
    shutil.rmtree(aside, ignore_errors=True)


class BuildClaim:
    """A build's claim on its working folder: an owner file with its pid, host and base version, held
    under an exclusive flock until `release` (or until the process ends, however it ends)."""

    def __init__(self, folder: Path, base: str | None = None) -> None:
        self.path = folder / OWNER_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # a file system without locks: pid, host and age decide
            locked = False
        # Written only once locked: whoever reads it under a shared lock knows this build has let go.
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "base": base, "locked": locked}
        os.write(self._fd, json.dumps({**owner, "created": time.time()}).encode())
        # An abandoned builder's claim ends with it, as its spill folder does.
        self._finalizer = weakref.finalize(self, os.close, self._fd)

    def release(self) -> None:
        self._finalizer()


def _owner(text: str | bytes) -> dict[str, Any] | None:
    try:
        owner = json.loads(text)
    except ValueError:  # not written yet
        return None
    return owner if isinstance(owner, dict) else None


def read_owner(folder: Path) -> dict[str, Any] | None:
    try:
        return _owner((folder / OWNER_FILE).read_bytes())
    except OSError:
        return None


def owned_by_live_build(folder: Path, grace_s: float = DEBRIS_GRACE_S) -> bool:
    """Whether a build may still be working in `folder`. Live: its owner file is locked. Ended: a build of
    this host held the lock and let go, or its process is gone. Otherwise (another host, no locks, no
    owner file yet) live while younger than `grace_s`."""
    marker = folder / OWNER_FILE
    here = socket.gethostname()
    owner = None
    try:
        fd = os.open(marker, os.O_RDONLY)
    except FileNotFoundError:
        pass
    except OSError:
        return True  # cannot tell: keep it
    else:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                lockable = True
            except BlockingIOError:
                return True  # its build holds the lock
            except OSError:
                lockable = False
            owner = _owner(os.read(fd, 1 << 16))  # read under our lock, so never a claim made meanwhile
        finally:
            os.close(fd)
        if lockable and owner and owner.get("locked") and owner.get("host") == here:
            return False  # it held the lock and let go: ended, however it ended
    pid = owner.get("pid") if owner and owner.get("host") == here else None
    if isinstance(pid, int) and not _process_exists(pid):
        return False  # its process is gone (killed, crashed)
    try:  # a process elsewhere, or no lock to go by: the age bounds how long it is kept
        age = time.time() - (marker if marker.exists() else folder).stat().st_mtime
    except FileNotFoundError:
        return False  # gone meanwhile
    return age < grace_s


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def release_freed_memory() -> None:
    """Give the memory of what a build just freed back to the system. Python frees it, but glibc keeps
    freed heap pages (and Arrow its pool) for reuse, so a 250,000-record build would leave ~1.5 GB
    resident into the steps after it (measured: benchmarks/scale_250k.py)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
