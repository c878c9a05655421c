"""A local /readyz that answers 503 a given number of times, then 200: the service a rollout verifies,
for the readiness tests of the library and of the serving_rollout DAG (served by tests/http_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.http_server import JsonHandler, LocalServer


class _Readyz(JsonHandler):
    not_ready_first: int
    flaky: frozenset[int]
    answers: list[int]

    def do_GET(self) -> None:  # noqa: N802 (http.server calls it so)
        number = len(self.answers)
        ready = self.path == "/readyz" and 0 <= self.not_ready_first <= number and number not in self.flaky
        self.answers.append(200 if ready else 503)
        self.send_json(self.answers[-1], {"ready": ready})


@contextmanager
def readiness_server(not_ready_first: int, then_not_ready: list[int] | None = None) -> Iterator[tuple[str, list[int]]]:
    """Yield (base URL, the statuses answered so far). /readyz answers 503 `not_ready_first` times, then
    200 (-1: never ready); the answers numbered in `then_not_ready` (from 0) are 503 again. On exit the
    port is closed: connections to it are refused."""
    answers: list[int] = []
    flaky = frozenset(then_not_ready or [])
    with LocalServer(_Readyz, not_ready_first=not_ready_first, flaky=flaky, answers=answers) as server:
        yield server.url, answers
