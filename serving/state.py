"""What the routes share in one process: settings, the index follower, the generator,
the key checker, the rate limiter, the audit log and the metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from patientinsight.generation.protocol import Analysis, Generator
from patientinsight.retrieval.cases import Case
from patientinsight.settings import Settings
from serving.audit import AuditLog
from serving.auth import KeyChecker
from serving.follower import IndexFollower
from serving.limits import RateLimiter
from serving.metrics import Metrics


class MisconfiguredGenerator:
    """Stands in for a generator whose settings are incomplete: every analysis says why, cases still come."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def generate(self, query: str, cases: list[Case]) -> Analysis:
        raise RuntimeError(self.reason)

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        raise RuntimeError(self.reason)


@dataclass
class ServiceState:
    settings: Settings
    follower: IndexFollower
    generator: Generator
    keys: KeyChecker
    limiter: RateLimiter
    audit: AuditLog
    metrics: Metrics
    # Encoding and search take turns: on two cores, torch threads of concurrent queries only fight.
    compute: threading.Semaphore = field(default_factory=lambda: threading.BoundedSemaphore(1))
