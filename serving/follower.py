"""Follow the published index: when CURRENT names a new version, load it beside the old one and swap.

Each request takes the current CaseIndex once and uses it to the end, so a switch never breaks a
request in flight; the old version's memory goes when its last request finishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from patientinsight.index.types import VectorIndex
from patientinsight.retrieval.cases import CaseIndex

log = logging.getLogger(__name__)


class IndexFollower:
    def __init__(
        self,
        index: VectorIndex,
        load: Callable[[str], CaseIndex],
        poll_s: float,
        on_switch: Callable[[CaseIndex], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        warm_up: Callable[[], None] | None = None,
    ) -> None:
        self.index = index
        self.load = load
        self.poll_s = poll_s
        self.on_switch = on_switch
        self.on_error = on_error
        self.warm_up = warm_up
        self.warmed = threading.Event()
        self._current: CaseIndex | None = None
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-follower", daemon=True)

    @property
    def current(self) -> CaseIndex | None:
        return self._current  # one attribute read: atomic, no lock needed on the request path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> bool:
        """Load the published version if it is new; True when a switch happened."""
        version = self.index.published()
        current = self._current.version if self._current else None
        if version is None or version == current or version == self._failed:
            return False
        try:
            loaded = self.load(version)
        except Exception as exc:  # a broken or pruned version: keep serving the one we have
            self._failed = version
            log.error("could not load index version %s (%s); still serving %s", version, type(exc).__name__, current)
            if self.on_error:
                self.on_error(version)
            return False
        self._current = loaded
        self._failed = None
        log.info("index version %s loaded (%d records); was %s", version, loaded.count(), current)
        if self.on_switch:
            self.on_switch(loaded)
        return True

    def _run(self) -> None:
        self._safe_check()
        if self.warm_up:
            try:
                self.warm_up()
            except Exception:
                log.exception("model warm-up failed")
        self.warmed.set()
        while not self._stop.wait(self.poll_s):
            self._safe_check()

    def _safe_check(self) -> None:
        try:
            self.check()
        except Exception:  # e.g. the index folder on a network disk went away for a moment
            log.exception("checking the published index failed")
