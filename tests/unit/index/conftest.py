"""What the index tests share: the Pinecone stand-in (tests/pinecone_standin.py), one per test, the
subprocesses a test starts (killed at its end)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.pinecone_standin import PineconeStandIn


@pytest.fixture
def standin() -> Iterator[PineconeStandIn]:
    with PineconeStandIn() as server:
        yield server


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses the test starts; those still running at its end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
