"""The lake's version folders, whichever backend holds the vectors: staging and committing a version,
the CURRENT pointer (publish is one atomic switch) and pruning old versions.

A version is immutable once committed: it appears by renaming its whole staging folder. Publishing
replaces one pointer file with os.replace, so a reader sees the old version or the new one, never
half of one.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from patientinsight.index.types import StagedExtras

log = logging.getLogger(__name__)

# Called with an old version's name and manifest (None when it has none) before its folder goes:
# removes what the backend holds outside the lake; False keeps the folder for the next prune.
Release = Callable[[str, dict[str, Any] | None], bool]


def read_manifest(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "manifest.json").read_text()))


def new_version_id() -> str:
    """Version ids sort by creation time, which is what pruning keeps by."""
    return datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%fZ")


class VersionStore:
    """Versions under `root/versions/<id>/` (records.parquet, manifest.json and what the backend adds);
    `root/CURRENT` names the published one. `release` is what a backend must remove along with an
    old version (Pinecone: its namespace)."""

    def __init__(self, root: Path, keep_versions: int = 5, release: Release | None = None) -> None:
        self.root = Path(root)
        self.keep_versions = keep_versions
        self.versions_dir = self.root / "versions"
        self.release = release

    def path(self, version: str) -> Path:
        return self.versions_dir / version

    def published(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def manifest(self, version: str) -> dict[str, Any]:
        return read_manifest(self.path(version))

    def publish(self, version: str) -> None:
        if not (self.path(version) / "manifest.json").exists():
            raise FileNotFoundError(f"index version {version} does not exist")
        tmp = self.root / f".CURRENT.{uuid.uuid4().hex}"
        tmp.write_text(version + "\n")
        tmp.replace(self.root / "CURRENT")  # atomic on POSIX: readers never see a partial pointer
        self.prune(keep=version)

    def prune(self, keep: str) -> None:
        """Remove the oldest committed versions beyond `keep_versions`, never `keep`."""
        committed = sorted(p.name for p in self.versions_dir.iterdir() if not p.name.startswith("."))
        old = [v for v in committed if v != keep][: max(0, len(committed) - self.keep_versions)]
        for name in old:
            if self.release is not None:
                has_manifest = (self.path(name) / "manifest.json").exists()
                manifest = read_manifest(self.path(name)) if has_manifest else None
                if not self.release(name, manifest):
                    continue  # the backend still holds it: keep the folder, the next publish retries
            shutil.rmtree(self.path(name), ignore_errors=True)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh staging folder beside the versions; removed if the block fails, so nothing
        half-written stays behind."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        folder = self.versions_dir / f".staging-{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def commit(self, staging: Path, manifest: dict[str, Any], staged_extras: StagedExtras | None) -> str:
        """Add the extras (the lexical index) from the staged records, write the manifest and let the
        version appear: whole, or not at all."""
        if staged_extras is not None:
            staged_extras(staging)
            release_freed_memory()
        version = str(manifest["version"])
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        staging.rename(self.path(version))
        return version


def release_freed_memory() -> None:
    """Give the memory of what a build just freed back to the system. Python frees it, but glibc keeps
    freed heap pages (and Arrow its pool) for reuse, so a 250,000-record build would leave ~1.5 GB
    resident into the steps after it (measured: benchmarks/scale_250k.py)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
