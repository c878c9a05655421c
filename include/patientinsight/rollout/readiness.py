"""Whether a rolled-out service answers ready through its Service: GET /readyz, 200 twice in a row."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

CONSECUTIVE = 2  # one lucky 200 from a pod that is about to fail its own probe does not count
PROBE_TIMEOUT_S = 5.0


def service_url(template: str, release: str, namespace: str) -> str:
    return template.format(release=release, namespace=namespace).rstrip("/")


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """One GET: whether it answered 200, and what it answered (for the log and the timeout's message)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


@dataclass(frozen=True)
class Readiness:
    """What the probes so far said: how many, how many 200s in a row at the end, the last answer, and
    when the first and the last were made (wall clock: a rescheduled sensor probes from other processes)."""

    probes: int = 0
    streak: int = 0
    last: str = "no answer"
    first_at: float | None = None
    last_at: float | None = None

    @classmethod
    def from_dict(cls, saved: Any) -> Readiness:
        return cls(**saved) if isinstance(saved, Mapping) else cls()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ready(self) -> bool:
        return self.streak >= CONSECUTIVE

    def after(self, ok: bool, answer: str, at: float) -> Readiness:
        return Readiness(
            probes=self.probes + 1,
            streak=self.streak + 1 if ok else 0,
            last=answer,
            first_at=at if self.first_at is None else self.first_at,
            last_at=at,
        )

    def summary(self) -> dict[str, Any]:
        """The numbers the MLflow run records once ready: seconds from the first probe to the last."""
        return {"ready_seconds": round((self.last_at or 0.0) - (self.first_at or 0.0), 3), "attempts": self.probes}


def check(base_url: str, seen: Readiness, clock: Callable[[], float] = time.time) -> Readiness:
    """Probe <base_url>/readyz once and add its answer to what the earlier probes said."""
    url = f"{base_url}/readyz"
    ok, answer = probe(url)
    now = seen.after(ok, answer, clock())
    log.info("readiness %s: %s (probe %d, %d in a row)", url, answer, now.probes, now.streak)
    return now
