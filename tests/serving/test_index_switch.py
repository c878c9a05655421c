"""The service follows the published index: new versions are picked up without a restart, and queries
running through the switches all succeed."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import copy_index
from tests.serving.service import Service


@pytest.fixture(scope="module")
def switching_service(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = copy_index(built_home, tmp_path_factory.mktemp("switching"))
    env = {"PATIENTINSIGHT_DEV_MODE": "1", "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "100000"}
    with Service(home, env=env).running() as service:
        yield service


def new_version_without(home: Path, uid: str) -> str:
    """A new version through the index's real builder (base minus one record, lexical index rebuilt)."""
    from patientinsight.index.embedded import EmbeddedIndex
    from patientinsight.index.lexical import lexical_index_hook

    index = EmbeddedIndex(home / "index")
    base = index.published()
    builder = index.builder(base, manifest=index.manifest(base))
    builder.delete([uid])
    return builder.commit(staged_extras=lexical_index_hook())


def wait_for_version(service: Service, version: str) -> None:
    for _ in range(200):
        if httpx.get(service.url + "/readyz").json()["index_version"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the service did not switch to {version}")


def test_switch_while_queries_run_fails_no_request(switching_service: Service) -> None:
    from patientinsight.index.embedded import EmbeddedIndex

    home = switching_service.home
    index = EmbeddedIndex(home / "index")
    first = index.published()
    assert first is not None
    uids = list(index.open(first).hashes())
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    errors: list[str] = []

    def client_loop() -> None:
        with switching_service.client() as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/query", json={"text": "chest pain radiating to the left arm", "k": 5})
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        versions[response.json()["index_version"]] += 1
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=client_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        published = [first]
        for round_ in range(3):
            time.sleep(0.5)
            version = new_version_without(home, uids[round_])
            index.publish(version)
            published.append(version)
            wait_for_version(switching_service, version)
        time.sleep(0.5)
        index.publish(first)  # a rollback is a switch too
        wait_for_version(switching_service, first)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert errors == []
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 20
    assert len(set(versions) & set(published)) >= 3, versions  # answers came from several versions


def test_a_record_removed_in_the_new_version_is_gone_after_the_switch(switching_service: Service) -> None:
    from patientinsight.index.embedded import EmbeddedIndex

    index = EmbeddedIndex(switching_service.home / "index")
    uid = list(index.open(index.published()).hashes())[-1]
    with switching_service.client() as client:
        assert client.get(f"/v1/cases/{uid}").status_code == 200
        version = new_version_without(switching_service.home, uid)
        index.publish(version)
        wait_for_version(switching_service, version)
        assert client.get(f"/v1/cases/{uid}").status_code == 404
    metrics = httpx.get(switching_service.url + "/metrics").text
    info = [line for line in metrics.splitlines() if line.startswith("patientinsight_index_info{")]
    assert len(info) == 1 and f'version="{version}"' in info[0], info
