"""A real uvicorn process of the query service, on a free port, with its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.http_server import free_port


@dataclass
class Service:
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / f"service-{self.port}.log"

    @property
    def audit_url(self) -> str:
        return f"sqlite:///{self.home / f'audit-{self.port}.db'}"

    def start(self, wait_ready: bool = True, timeout_s: float = 120.0) -> Service:
        env = {
            **os.environ,
            "PATIENTINSIGHT_HOME": str(self.home),
            "PATIENTINSIGHT_AUDIT_DB_URL": self.audit_url,
            "PATIENTINSIGHT_INDEX_POLL_S": "0.2",
            "HF_HUB_OFFLINE": "1",
            **self.env,
        }
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "patientinsight.cli", "serve", "--host", self.host, "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                response = httpx.get(self.url + path, timeout=2)
                if response.status_code == 200 and (not wait_ready or response.json()["model_warm"]):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"service not {'ready' if wait_ready else 'up'} in {timeout_s} s:\n{self.log()[-3000:]}")

    @contextmanager
    def running(self, wait_ready: bool = True) -> Iterator[Service]:
        """The service started (see `start`) for the `with` block, stopped after it."""
        self.start(wait_ready)
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)
