"""The rate limit across replicas: two real uvicorn processes counting in one Redis allow the limit once, not
twice; and a limiter store that is down never fails a request (each process counts alone, logged once,
counted in /metrics)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from serving.auth import hash_key
from serving.limits import RateLimiter
from tests.http_server import free_port
from tests.serving.service import Service

REDIS_URL = os.environ.get("PATIENTINSIGHT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT = 6


def redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); .ci/run starts one")
    return REDIS_URL


@pytest.fixture
def unique_key() -> tuple[str, str]:
    """A key of this test alone: its key id is the limiter's identifier, so no other test shares its count."""
    key_id = f"replicas-{uuid.uuid4().hex}"
    return key_id, f"key-{uuid.uuid4().hex}"


@pytest.fixture
def replicas(tmp_path: Path, unique_key: tuple[str, str]) -> Iterator[list[Service]]:
    """Two services over one Redis, like two pods of the chart. No index: the limit is checked before the
    index, so an admitted request is a 503 (no index yet) and a limited one a 429."""
    env = {
        "PATIENTINSIGHT_API_KEYS": f"{unique_key[0]}:{hash_key(unique_key[1])}",
        "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": str(LIMIT),
        "PATIENTINSIGHT_RATE_LIMIT_STORAGE": redis_or_skip(),
    }
    with ExitStack() as stack:
        yield [stack.enter_context(Service(tmp_path / f"pod-{i}", env=env).running(wait_ready=False)) for i in (0, 1)]


def test_two_replicas_share_one_limit(replicas: list[Service], unique_key: tuple[str, str]) -> None:
    headers = {"X-API-Key": unique_key[1]}
    statuses = [httpx.get(replicas[i % 2].url + "/v1/cases/x", headers=headers).status_code for i in range(3 * LIMIT)]
    assert set(statuses) == {503, 429}
    assert statuses.count(503) == LIMIT  # admitted: the limit once across both, not once per replica
    assert statuses[:LIMIT] == [503] * LIMIT
    limited = httpx.get(replicas[1].url + "/v1/cases/x", headers=headers)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    metrics = httpx.get(replicas[0].url + "/metrics").text
    assert "patientinsight_rate_limit_fallbacks_total 0.0" in metrics  # Redis answered every time


def test_a_store_that_is_down_fails_open_to_a_limit_per_process(caplog: pytest.LogCaptureFixture) -> None:
    fallbacks = []
    limiter = RateLimiter(3, f"redis://127.0.0.1:{free_port()}/0", on_fallback=lambda: fallbacks.append(1))
    with caplog.at_level(logging.WARNING, logger="serving.limits"):
        waits = [limiter.acquire("k") for _ in range(4)]
    assert waits[:3] == [0, 0, 0] and waits[3] >= 1  # still limited, by this process alone
    assert len(fallbacks) == 4
    assert sum("store unreachable" in r.getMessage() for r in caplog.records) == 1  # once, not per request


def test_a_service_whose_store_is_down_keeps_answering(tmp_path: Path, unique_key: tuple[str, str]) -> None:
    env = {
        "PATIENTINSIGHT_API_KEYS": f"{unique_key[0]}:{hash_key(unique_key[1])}",
        "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "3",
        "PATIENTINSIGHT_RATE_LIMIT_STORAGE": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
    }
    headers = {"X-API-Key": unique_key[1]}
    with Service(tmp_path / "pod", env=env).running(wait_ready=False) as service:
        statuses = [httpx.get(service.url + "/v1/cases/x", headers=headers).status_code for _ in range(4)]
        metrics = httpx.get(service.url + "/metrics").text
        log = service.log()
    assert statuses == [503, 503, 503, 429]  # answered (no index yet), and still limited per process
    assert "patientinsight_rate_limit_fallbacks_total 4.0" in metrics
    assert log.count("rate-limit store unreachable") == 1
