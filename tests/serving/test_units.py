"""The pure parts of serving: key checks and the rate limiter."""

from __future__ import annotations

import pytest

from serving.auth import KeyChecker, hash_key, parse_keys
from serving.limits import RateLimiter


def test_keys_are_configured_as_hashes_and_identified() -> None:
    checker = KeyChecker(f"a:{hash_key('alpha-key')}, b:{hash_key('beta-key')}", dev_mode=False)
    assert checker.identify("alpha-key") == "a"
    assert checker.identify("beta-key") == "b"
    assert checker.identify("alpha-key ") is None
    assert checker.identify("") is None and checker.identify(None) is None


def test_a_malformed_key_entry_is_an_error() -> None:
    with pytest.raises(ValueError, match="key_id:sha256_hex"):
        parse_keys("a:not-a-hash")


@pytest.mark.parametrize(
    ("dev_mode", "server", "client", "open_"),
    [
        (True, "127.0.0.1", "127.0.0.1", True),
        (True, "::1", "::1", True),
        (True, "0.0.0.0", "127.0.0.1", False),  # a dev setting on a public bind still asks for keys
        (True, "127.0.0.1", "10.0.0.5", False),
        (False, "127.0.0.1", "127.0.0.1", False),
    ],
)
def test_dev_mode_waives_keys_only_on_loopback(dev_mode: bool, server: str, client: str, open_: bool) -> None:
    assert KeyChecker("", dev_mode).open_locally(server, client) is open_


def test_rate_limiter_allows_a_burst_then_says_how_long_to_wait() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
    wait = limiter.acquire("k")
    assert 1 <= wait <= 60  # a moving window of 60 s: the first request leaves it within a minute
    assert limiter.acquire("other") == 0  # per key
