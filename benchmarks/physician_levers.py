"""Ranking levers tried on the physician-style descriptions (one shipped: the dense share 0.2): rewrites of a query
before hybrid_rerank reads it (the lexical side only; the dense side keeps the description's vector),
the patient's age and sex parsed from the description as a soft prior over the rerank pool, and the
fusion's dense share.

Each lever is a `Lever`: a name and a function from a query to the query as the retriever sees it.
They are scored with benchmarks/retrieval_quality.py's `rerank_variant`, so a lever differs from the
product in that lever alone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import pandas as pd

from patientinsight.evaluation.metrics import Query
from patientinsight.index.lexical import document_texts, tokenize
from patientinsight.records.ages import YEARS_PER_UNIT

WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")
NUMBER = re.compile(r"^[0-9][0-9.,\-]*$")  # a lab value or a count: "84", "1.28", "46-51"
# A negation cue and what it governs, up to the end of the clause ("no fever, rash or acne; ...").
NEGATED = re.compile(r"\b(?:no|not|nor|without|denies|denied|negative for)\b[^.;:]*?(?=[.;:]|\bbut\b|\byet\b|$)", re.I)
# Words of any case report's narrative, and units: what a clinician's description shares with every
# summary, not with the similar ones.
# fmt: off
GENERIC = frozenset({
    "patient", "patients", "year", "years", "old", "month", "months", "week", "weeks", "day", "days", "hour",
    "hours", "present", "presents", "presented", "presentation", "admit", "admitted", "admission", "history",
    "treat", "treated", "treatment", "show", "shows", "showed", "shown", "reveal", "reveals", "revealed", "find",
    "finds", "found", "normal", "examination", "exam", "hospital", "case", "report", "follow", "later", "earlier",
    "previous", "previously", "prior", "ago", "time", "start", "started", "develop", "develops", "developed",
    "become", "becomes", "became", "remain", "remains", "remained", "mg", "dl", "ml", "mmol", "ul", "kg", "cm", "mm",
    "ng", "pg", "iu", "per",
})
# fmt: on
DENSE_SHARES = (0.2, 0.3, 0.4, 0.5, 0.6)  # hybrid_rerank's rerank_weight; the shipped one is not a lever
AGE = re.compile(r"\b(\d+(?:\.\d+)?)[- ](year|month|week|day)s?[- ]old\b", re.I)
FEMALE = re.compile(r"\b(?:woman|female|girl|lady|she|her|mother|primigravida)\b", re.I)
MALE = re.compile(r"\b(?:man|male|boy|gentleman|he|his)\b", re.I)


@dataclass(frozen=True)
class Lever:
    name: str
    rewrite: Callable[[Query], Query]
    prior: tuple[float, float] | None = None  # (sex weight, age weight) for rerank_variant
    dense_share: float | None = None  # hybrid_rerank's rerank_weight, when the lever changes it


def keep_words(text: str, keep: Callable[[str], bool]) -> str:
    """The text's words that `keep` accepts, or the text itself when it would keep none."""
    kept = [w for w in WORD.findall(text) if keep(w)]
    return " ".join(kept) if kept else text


def without_numbers(q: Query) -> Query:
    return replace(q, text=keep_words(q.text, lambda w: not NUMBER.match(w)))


def without_negated(q: Query) -> Query:
    """Findings the description rules out ("no rash") no longer match summaries that report them."""
    return replace(q, text=NEGATED.sub(" ", q.text))


def without_generic(q: Query) -> Query:
    return replace(q, text=keep_words(q.text, lambda w: w.lower() not in GENERIC))


def document_shares(records: pd.DataFrame) -> dict[str, float]:
    """The share of records each stemmed term occurs in (title once, text)."""
    texts = document_texts(records["title"].tolist(), records["text"].tolist(), 1)
    counts: Counter[str] = Counter()
    for terms in tokenize(texts):
        counts.update(set(terms))
    return {term: n / len(records) for term, n in counts.items()}


def idf_floor(shares: dict[str, float], most: float) -> Callable[[Query], Query]:
    """Drops words whose terms occur in more than `most` of the records: a floor under BM25's IDF."""

    def common(word: str) -> bool:
        return any(shares.get(t, 0.0) > most for t in tokenize([word])[0])

    return lambda q: replace(q, text=keep_words(q.text, lambda w: not common(w)))


def rare_terms_repeated(shares: dict[str, float], below: float) -> Callable[[Query], Query]:
    """Words whose terms occur in fewer than `below` of the records are read twice (BM25 counts a
    repeated query term each time): the rare, clinical words weigh more, the common ones stay."""

    def rare(word: str) -> bool:
        return all(shares.get(t, 0.0) < below for t in tokenize([word])[0])

    def rewrite(q: Query) -> Query:
        words = WORD.findall(q.text)
        return replace(q, text=" ".join(w for word in words for w in ([word, word] if rare(word) else [word])))

    return rewrite


def patient_of(text: str) -> tuple[float | None, str | None]:
    """The described patient's age in years and sex ("F", "M"), from the words a clinician uses."""
    match = AGE.search(text)
    age = float(match.group(1)) * YEARS_PER_UNIT[match.group(2).lower()] if match else None
    female, male = len(FEMALE.findall(text)), len(MALE.findall(text))
    return age, "F" if female > male else "M" if male > female else None


def with_patient(q: Query) -> Query:
    """The query with the age and sex its text states, for a prior (not the record's metadata)."""
    age, sex = patient_of(q.text)
    return replace(q, age_years=age, sex=sex)


def chained(*rewrites: Callable[[Query], Query]) -> Callable[[Query], Query]:
    def rewrite(q: Query) -> Query:
        for step in rewrites:
            q = step(q)
        return q

    return rewrite


def levers(records: pd.DataFrame, priors: Iterable[tuple[float, float]], dense_share: float) -> list[Lever]:
    """Every rewrite, each alone and with each prior (age and sex always from the description), and
    every dense share but the shipped one (`dense_share`)."""
    shares = document_shares(records)
    rewrites: dict[str, Callable[[Query], Query]] = {
        "as written": lambda q: q,
        "numbers dropped": without_numbers,
        "negated findings dropped": without_negated,
        "generic case-report words dropped": without_generic,
        "IDF floor (terms in >30% of records dropped)": idf_floor(shares, 0.3),
        "IDF floor (terms in >50% of records dropped)": idf_floor(shares, 0.5),
        "rare terms (in <1% of records) read twice": rare_terms_repeated(shares, 0.01),
        "rare terms (in <5% of records) read twice": rare_terms_repeated(shares, 0.05),
    }
    out = []
    for name, rewrite in rewrites.items():
        for sex_w, age_w in priors:
            label = name if (sex_w, age_w) == (0.0, 0.0) else f"{name}; prior sex {sex_w}, age {age_w}"
            out.append(Lever(label, chained(rewrite, with_patient), (sex_w, age_w)))
    for share in (s for s in DENSE_SHARES if s != dense_share):  # the fusion's, the descriptions as written
        out.append(Lever(f"as written; dense share {share}", with_patient, (0.0, 0.0), share))
    return out
