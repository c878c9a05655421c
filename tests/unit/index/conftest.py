"""What the index tests share: the Pinecone stand-in (tests/pinecone_standin.py), one per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pinecone_standin import PineconeStandIn


@pytest.fixture
def standin() -> Iterator[PineconeStandIn]:
    with PineconeStandIn() as server:
        yield server
