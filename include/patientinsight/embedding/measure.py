"""Measure the candidate (backend, precision) pairs on this machine and pick one: a short round-robin
over generated check texts, the quality rule (embedding.quality) against an fp32 reference, then the
fastest pair that the rule allows.

Round-robin: every pair encodes the check texts once per round, one pair after the other, so a busy
spell of the machine slows every pair alike; a pair's rate is that of its best round. The first round
gives every pair's vectors (for the quality rule) and a first rate; only pairs within CONTENDER of the
fastest allowed one go on to the later, longer rounds: the others cannot win, and measuring them again
would only make the first use slower.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from patientinsight.embedding.hardware import Backend, Pair, Precision
from patientinsight.embedding.quality import agreement, verdict

Encode = Callable[[Sequence[str]], np.ndarray]
# Generated case reports (ingest/sample.py) of another seed than int8's calibration texts: never a
# record that is indexed or evaluated, and not the texts the int8 model was calibrated on.
CHECK_TEXTS = 48
CHECK_SEED = 20261224
ROUNDS = 3
CONTENDER = 0.75  # after round 1, pairs slower than this share of the fastest allowed pair stop
SETTLE_S = 0.05  # a pause before each timed call (see round_robin)
# Later rounds encode the check texts this many times over in one call: more batches in flight, closer to
# an ingest's windows of 1,024 texts (OpenVINO's pipelined model gains most from that).
LATER_REPEAT = 2


@lru_cache(maxsize=1)
def check_texts() -> tuple[str, ...]:
    from patientinsight.ingest.sample import generate_rows

    rows = generate_rows(articles=CHECK_TEXTS, seed=CHECK_SEED)
    return tuple(row["patient"] for row in rows[:CHECK_TEXTS])


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
    rates: dict[Pair, list[float]] = {pair: [] for pair in encoders}
    vectors: dict[Pair, np.ndarray] = {}
    active = list(encoders)
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
        if number == 0:
            rows = _rows(vectors, rates, reference_key)
            best = max((r.texts_per_s for r in rows if r.allowed), default=0.0)
            active = [r.pair for r in rows if r.allowed and r.texts_per_s >= CONTENDER * best]
    return _rows(vectors, rates, reference_key)


def _rows(vectors: dict[Pair, np.ndarray], rates: dict[Pair, list[float]], reference_key: Pair) -> list[Row]:
    """A pair's rate is its best round: the machine's other work only ever slows a round down."""
    rows = []
    for pair, got in vectors.items():
        seen = agreement(got, vectors[reference_key])
        allowed, note = verdict(pair[1], seen)
        if pair == reference_key:
            note = "the fp32 reference"
        best = round(max(rates[pair]), 1)
        rows.append(Row(pair[0], pair[1], best, len(rates[pair]), seen.cosine_min, seen.cosine_mean, allowed, note))
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


def table_text(rows: Sequence[Row]) -> str:
    """The table in one line, for the log: no text, only pairs, rates and agreement."""
    cells = [
        f"{r.backend} {r.precision} {r.texts_per_s} texts/s cos min {r.cosine_min:.4f} mean {r.cosine_mean:.4f}"
        f"{'' if r.allowed else ' REFUSED'}"
        for r in rows
    ]
    return "; ".join(cells)
