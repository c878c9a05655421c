"""The pure parts of serving: key checks, citations, passages, the rate limiter."""

from __future__ import annotations

import pytest

from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.generation import resolve_citations
from patientinsight.retrieval.passages import best_passages
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


def _case(uid: str) -> Case:
    return Case(patient_uid=uid, pmid="1", title="t", age_years=None, sex=None)


def test_citations_resolve_positions_to_uids_in_order_of_use() -> None:
    cases = [_case("u1"), _case("u2"), _case("u3")]
    text = "Shared findings [2]. Treated alike [1, 3] and [2-3]; not a case [7] or [0]."
    assert resolve_citations(text, cases) == [
        {"ref": 2, "patient_uid": "u2"},
        {"ref": 1, "patient_uid": "u1"},
        {"ref": 3, "patient_uid": "u3"},
    ]


def test_passages_are_the_sentences_that_match_best() -> None:
    text = (
        "A 60-year-old man was admitted. He had crushing chest pain radiating to the left arm. "
        "His mother had diabetes. ST-segment elevation was seen in the inferior leads."
    )
    passages = best_passages("chest pain to the left arm, ST elevation", text, 2)
    assert passages == [
        "He had crushing chest pain radiating to the left arm.",
        "ST-segment elevation was seen in the inferior leads.",
    ]


def test_rate_limiter_allows_a_burst_then_says_how_long_to_wait() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
    wait = limiter.acquire("k")
    assert 1 <= wait <= 20
    assert limiter.acquire("other") == 0  # per key
