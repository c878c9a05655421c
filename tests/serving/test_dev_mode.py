"""Dev mode waives the API key only while the service listens on loopback, against real uvicorn processes:
bound to 0.0.0.0, a client on 127.0.0.1 still needs a key (the README's promise)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.serving.conftest import served
from tests.serving.service import Service

QUERY = {"text": "A woman with fever and a productive cough.", "generate": False}


def test_dev_mode_on_a_loopback_bind_needs_no_key(dev_service: Service) -> None:
    assert httpx.post(dev_service.url + "/v1/query", json=QUERY, timeout=30).status_code == 200


def test_dev_mode_on_a_public_bind_still_asks_loopback_clients_for_a_key(built_home: Path, tmp_path: Path) -> None:
    env = {"PATIENTINSIGHT_DEV_MODE": "true", "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "100000"}
    public = served(built_home, tmp_path, env)
    public.host = "0.0.0.0"
    with public.running(wait_ready=False):
        response = httpx.post(f"http://127.0.0.1:{public.port}/v1/query", json=QUERY, timeout=30)
    assert response.status_code == 401
    assert response.json() == {"detail": "a valid API key is required (header X-API-Key)"}
    assert "dev_mode=True" in public.log()
