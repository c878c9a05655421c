"""Versions held for a person's decision: the quality gate holds a worse version back until someone
approves it (publishing it) or rejects it, and pruning must keep it until then (index.versions). A
hold is one file, `root/held/<version>`, made and removed whole; its age bounds it, so a run that
never came back (failed, or marked failed) does not pin its version for ever."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from patientinsight.index.durable import fsync_path

HELD_DIR = "held"
# patient_ingest's approval waits two days before it counts as a rejection; a day more for a run
# whose last steps come late (a queued or retried task).
HOLD_S = 3 * 24 * 3600.0


class Holds:
    def __init__(self, root: Path, hold_s: float = HOLD_S) -> None:
        self.folder = Path(root) / HELD_DIR
        self.hold_s = hold_s

    def hold(self, version: str) -> None:
        """Keep `version` from pruning until `release` (or for `hold_s`); holding again renews it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / version
        marker.touch()
        fsync_path(self.folder)  # a hold lost to a power loss would let the version be pruned

    def release(self, version: str) -> None:
        """The decision is made: `version` counts for pruning like any other again."""
        (self.folder / version).unlink(missing_ok=True)

    def held(self) -> set[str]:
        """The versions held now; the holds that ran out are removed."""
        if not self.folder.is_dir():
            return set()
        now, found = time.time(), set()
        for marker in self.folder.iterdir():
            with contextlib.suppress(FileNotFoundError):  # released meanwhile
                if now - marker.stat().st_mtime < self.hold_s:
                    found.add(marker.name)
                else:
                    marker.unlink()
        return found
