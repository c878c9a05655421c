"""With no index at all the service starts, says it is not ready, answers 503 that names the ingest, and
becomes ready without a restart once an index is published. Also: dev mode and the rate limit."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.service import Service


@pytest.fixture
def bare_service(tmp_path: Path) -> Iterator[Service]:
    """A service of its own for each test, over a home with no index: the rate limit's budget, and whether an
    index has been published, are each test's alone."""
    env = {"PATIENTINSIGHT_DEV_MODE": "1", "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "4"}
    with Service(tmp_path / "bare", env=env).running(wait_ready=False) as service:
        yield service


def test_before_any_index_queries_get_503_naming_the_ingest(bare_service: Service) -> None:
    ready = httpx.get(bare_service.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False and ready.json()["index_version"] is None
    assert httpx.get(bare_service.url + "/healthz").status_code == 200
    # Dev mode on loopback: no key needed (the answer is 503, not 401).
    response = httpx.post(bare_service.url + "/v1/query", json={"text": "chest pain"})
    assert response.status_code == 503
    assert "ingest" in response.json()["detail"]


def test_rate_limit_is_429_with_retry_after(bare_service: Service) -> None:
    statuses = [httpx.get(bare_service.url + "/v1/cases/x").status_code for _ in range(8)]
    assert 429 in statuses
    assert set(statuses) <= {503, 429}
    limited = httpx.get(bare_service.url + "/v1/cases/x")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    # Health, readiness and the page are not rate limited.
    assert httpx.get(bare_service.url + "/healthz").status_code == 200


def test_becomes_ready_when_an_index_is_published(bare_service: Service, built_home: Path) -> None:
    from patientinsight.index.embedded import EmbeddedIndex

    source = EmbeddedIndex(built_home / "index")
    version = source.published()
    assert version is not None
    target = EmbeddedIndex(bare_service.home / "index")
    target.versions_dir.mkdir(parents=True)
    shutil.copytree(source.versions_dir / version, target.versions_dir / version)
    target.publish(version)
    body: dict = {}  # type: ignore[type-arg]
    for _ in range(100):
        body = httpx.get(bare_service.url + "/readyz").json()
        if body["ready"]:
            break
        time.sleep(0.1)
    assert body["ready"] is True and body["index_version"] == version
