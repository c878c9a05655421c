"""Measure the candidate (backend, precision) pairs on this machine and pick one: a short round-robin
over generated check texts, the quality rule (embedding.quality) against an fp32 reference, then the
fastest pair that the rule allows.

Round-robin: every pair encodes the check texts once per round, one pair after the other, so a busy
spell of the machine slows every pair alike; a pair's rate is that of its best round. The first round
gives every pair's vectors (for the quality rule) and a first rate; only pairs within CONTENDER of the
fastest allowed one go on to the later, longer rounds: the others cannot win, and measuring them again
would only make the first use slower.

Each round also times every allowed pair on single short queries, one call each: the service encodes one
query at a time, where a runtime's fixed cost per call weighs more than its throughput. A version's
queries are encoded by the pair of its numerics class that answers one query fastest (query_pair), which
need not be the pair that encoded its documents fastest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from patientinsight.embedding.hardware import NUMERICS, Backend, Pair, Precision
from patientinsight.embedding.quality import agreement, verdict

Encode = Callable[[Sequence[str]], np.ndarray]
# Generated case reports (records/synthetic.py) of another seed than int8's calibration texts: never a
# record that is indexed or evaluated, and not the texts the int8 model was calibrated on.
CHECK_TEXTS = 48
CHECK_SEED = 20261224
ROUNDS = 3
CONTENDER = 0.75  # after round 1, pairs slower than this share of the fastest allowed pair stop
SETTLE_S = 0.05  # a pause before each timed call (see round_robin)
# Later rounds encode the check texts this many times over in one call: more batches in flight, closer to
# an ingest's windows of 1,024 texts (OpenVINO's pipelined model gains most from that).
LATER_REPEAT = 2
QUERY_WORDS = 25  # a short query: the opening words of a check text
QUERY_TIMINGS = 9  # single queries timed per pair and round (their median counts)


@lru_cache(maxsize=1)
def check_texts() -> tuple[str, ...]:
    from patientinsight.records.synthetic import generate_rows

    rows = generate_rows(articles=CHECK_TEXTS, seed=CHECK_SEED)
    return tuple(row["patient"] for row in rows[:CHECK_TEXTS])


def query_texts(texts: Sequence[str]) -> list[str]:
    return [" ".join(text.split()[:QUERY_WORDS]) for text in texts]


@dataclass(frozen=True)
class Row:
    """One line of the measured table."""

    backend: Backend
    precision: Precision
    texts_per_s: float
    rounds: int
    cosine_min: float
    cosine_mean: float
    allowed: bool
    note: str
    query_ms: float | None = None  # median of one short query per call (best round); None: not timed

    @property
    def pair(self) -> Pair:
        return (self.backend, self.precision)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_pair(pairs: Sequence[Pair]) -> Pair:
    """The fp32 vectors the others are held against: torch fp32 where it is a candidate, else the first
    fp32 pair (every fp32 runtime agrees with torch to cosine > 0.999), else the first pair."""
    if ("torch", "fp32") in pairs:
        return ("torch", "fp32")
    return next((p for p in pairs if p[1] == "fp32"), pairs[0])


def round_robin(
    encoders: dict[Pair, Encode],
    texts: Sequence[str],
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
    settle: Callable[[float], None] = time.sleep,
) -> list[Row]:
    """Every pair's rate and agreement with the reference pair on `texts` (the encoders are warm)."""
    texts = list(texts)
    reference_key = reference_pair(list(encoders))
    queries = query_texts(texts[:QUERY_TIMINGS])
    rates: dict[Pair, list[float]] = {pair: [] for pair in encoders}
    query_ms: dict[Pair, list[float]] = {pair: [] for pair in encoders}
    vectors: dict[Pair, np.ndarray] = {}
    active, timed = list(encoders), list(encoders)
    for number in range(rounds):
        batch = texts if number == 0 else texts * LATER_REPEAT
        for pair in active:
            # The previous runtime's idle threads spin for a while after their work (torch's GNU OpenMP,
            # OpenVINO's TBB): let them stop, so that a pair is not slowed by the one that ran before it.
            settle(SETTLE_S)
            started = clock()
            got = encoders[pair](batch)
            rates[pair].append(len(batch) / max(clock() - started, 1e-9))
            vectors.setdefault(pair, got)  # round 1's: the check texts once
        for pair in timed:
            settle(SETTLE_S)
            query_ms[pair].append(_median_call_ms(encoders[pair], queries, clock))
        if number == 0:
            rows = _rows(vectors, rates, query_ms, reference_key)
            best = max((r.texts_per_s for r in rows if r.allowed), default=0.0)
            active = [r.pair for r in rows if r.allowed and r.texts_per_s >= CONTENDER * best]
            timed = [r.pair for r in rows if r.allowed]  # any allowed pair may answer queries fastest
    return _rows(vectors, rates, query_ms, reference_key)


def _median_call_ms(encode: Encode, queries: Sequence[str], clock: Callable[[], float]) -> float:
    times = []
    for query in queries:
        started = clock()
        encode([query])
        times.append((clock() - started) * 1000)
    return float(np.median(times))


def _rows(
    vectors: dict[Pair, np.ndarray],
    rates: dict[Pair, list[float]],
    query_ms: dict[Pair, list[float]],
    reference_key: Pair,
) -> list[Row]:
    """A pair's rate is its best round, and its query time too: the machine's other work only ever slows
    a round down."""
    rows = []
    for pair, got in vectors.items():
        seen = agreement(got, vectors[reference_key])
        allowed, note = verdict(pair[1], seen)
        if pair == reference_key:
            note = "the fp32 reference"
        best = round(max(rates[pair]), 1)
        one = round(min(query_ms[pair]), 2) if query_ms[pair] else None
        row = Row(pair[0], pair[1], best, len(rates[pair]), seen.cosine_min, seen.cosine_mean, allowed, note, one)
        rows.append(row)
    return sorted(rows, key=lambda r: -r.texts_per_s)


def decide(rows: Sequence[Row]) -> tuple[Pair, str]:
    """The fastest pair the quality rule allows (the reference always is), and why."""
    allowed = [r for r in rows if r.allowed]
    if not allowed:  # even the reference disagrees with itself: cannot happen unless an encoder is broken
        raise RuntimeError("no embedding backend passed the quality rule: " + table_text(rows))
    best = max(allowed, key=lambda r: r.texts_per_s)
    faster = [r for r in rows if r.texts_per_s > best.texts_per_s and not r.allowed]
    why = f"fastest allowed ({best.texts_per_s} texts/s)"
    if faster:
        why += "; faster but refused by the quality rule: " + ", ".join(f"{r.backend} {r.precision}" for r in faster)
    return best.pair, why


def query_pair(rows: Sequence[Row], version_pair: Pair) -> tuple[Pair, str]:
    """The pair that encodes a version's queries: of the allowed pairs in the version's numerics class,
    the one fastest on one query. int8 stays with the version's own pair: two runtimes quantize the
    model differently, so their int8 vectors are not interchangeable as the exact class's are."""
    numerics = NUMERICS[version_pair[1]]
    if numerics == "int8":
        return version_pair, "int8: the version's own pair"
    timed = [r for r in rows if r.allowed and NUMERICS[r.precision] == numerics and r.query_ms is not None]
    if not timed:
        return version_pair, "no query timing measured: the version's own pair"
    best = min(timed, key=lambda r: r.query_ms or 0.0)
    return best.pair, f"fastest on one query of the {numerics} class ({best.query_ms} ms)"


def table_text(rows: Sequence[Row]) -> str:
    """The table in one line, for the log: no text, only pairs, rates and agreement."""
    cells = [
        f"{r.backend} {r.precision} {r.texts_per_s} texts/s, one query {r.query_ms} ms,"
        f" cos min {r.cosine_min:.4f} mean {r.cosine_mean:.4f}"
        f"{'' if r.allowed else ' REFUSED'}"
        for r in rows
    ]
    return "; ".join(cells)
