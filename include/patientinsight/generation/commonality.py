"""What the returned cases have in common, counted rather than written: the extractive analysis.

No language model is involved, and the page says so. Each statement cites the cases it counts ([n], their
position in the answer): the diagnoses they share (diagnoses.py), the age groups and sexes, and which of the
description's findings each case's text reports, a finding that a case says is absent or negative not
counting for it (negation.py). The passages are not repeated: they are shown with the cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from patientinsight.generation.diagnoses import Shared, shared_phrases
from patientinsight.generation.negation import Status, case_status, pieces, sentence_terms
from patientinsight.index.lexical import tokenize
from patientinsight.records.ages import age_band, age_display
from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.passages import split_sentences

NO_MODEL = "No language model is configured"
MAX_FINDINGS = 8

# Words of a description that say who the patient is, not what they have; and question words.
_PERSON_WORDS = (
    "man woman boy girl male female infant neonate newborn baby child children adult aged year month week day "
    "hour old patient presented presenting history describe which were was who what how many any did does "
    "case cases these those"
)
_PERSON_TERMS = frozenset(tokenize([_PERSON_WORDS])[0])
_FINDING_SPLIT = re.compile(r"[,;:.!?()\[\]\n]+|\s(?:and|with|or|but|plus|without|who|after)\s", re.IGNORECASE)
_LEADING = re.compile(r"^(?:(?:a|an|the|has|had|have|his|her|their|presents?|presented|of|in|on)\s+)+", re.IGNORECASE)
# The cue words around a negated or doubted finding ("no rash", "ANA negative"): not part of the finding.
_CUE_LEADING = re.compile(
    r"^(?:(?:no|not|without|any|den(?:y|ies|ied)|negative\s+for|absence\s+of|free\s+of|lack\s+of|possibl[ey]"
    r"|suspected|probable)\s+)+",
    re.IGNORECASE,
)
_CUE_TRAILING = re.compile(
    r"\s+(?:(?:was|were|is|are)\s+)?(?:negative|absent|normal|unremarkable|ruled\s+out|excluded)$", re.IGNORECASE
)

_BAND_WORDS = {
    "neonate": ("neonate", "neonates"),
    "infant": ("infant", "infants"),
    "child": ("child", "children"),
    "adolescent": ("adolescent", "adolescents"),
    "adult": ("adult", "adults"),
    "older adult": ("older adult", "older adults"),
}
_SEX_WORDS = {"F": "female", "M": "male"}


def cite(refs: Iterable[int]) -> str:
    """[1][3][4]: one bracket per case, so that each can be followed."""
    return "".join(f"[{n}]" for n in refs)


@dataclass(frozen=True)
class Finding:
    phrase: str  # as the description says it, without its negation
    terms: frozenset[str]  # its stemmed words, as the lexical index has them
    negated: bool = False  # the description says the patient does not have it ("no rash")


def findings(description: str) -> list[Finding]:
    """The description cut into findings ("fever", "productive cough", and "rash" of "without rash", negated),
    each with the terms it needs. Words about who the patient is, and numbers, are not findings."""
    out: list[Finding] = []
    seen: set[frozenset[str]] = set()
    for piece in pieces(description):
        for part in _FINDING_SPLIT.split(piece.text):
            phrase = _LEADING.sub("", " ".join(part.split())).strip()
            phrase = _CUE_TRAILING.sub("", _CUE_LEADING.sub("", phrase)).strip()
            if not phrase:
                continue
            terms = frozenset(t for t in tokenize([phrase])[0] if not t.isdigit() and t not in _PERSON_TERMS)
            if terms and terms not in seen:
                seen.add(terms)
                out.append(Finding(phrase, terms, negated=piece.status is Status.NEGATED))
    return out[:MAX_FINDINGS]


def _diagnoses_statements(cases: Sequence[Case]) -> list[str]:
    n = len(cases)
    shared = shared_phrases(cases)
    diagnoses = [s for s in shared if s.diagnosis]
    others = [s for s in shared if not s.diagnosis]

    def counted(phrases: list[Shared]) -> str:
        return "; ".join(f"{s.phrase} in {len(s.refs)} of {n} {cite(s.refs)}" for s in phrases)

    statements = []
    if diagnoses:
        statements.append(f"Diagnoses they share (from their titles and texts): {counted(diagnoses)}.")
    elif n > 1:
        statements.append("Their titles and texts name no diagnosis in common.")
    if others:
        statements.append(f"Their titles also share: {counted(others)}.")
    return statements


def _ages_statement(cases: Sequence[Case]) -> str:
    groups: dict[str, list[int]] = {}
    for ref, case in enumerate(cases, start=1):
        groups.setdefault(age_band(case.age_years) or "unknown", []).append(ref)
    parts = []
    for band, (one, many) in _BAND_WORDS.items():
        refs = groups.get(band)
        if not refs:
            continue
        ages = sorted(cases[r - 1].age_years or 0.0 for r in refs)
        youngest, oldest = age_display(ages[0]), age_display(ages[-1])
        span = f"aged {youngest}" if youngest == oldest else f"aged {youngest} to {oldest}"
        parts.append(f"{len(refs)} {one if len(refs) == 1 else many} {span} {cite(refs)}")
    if "unknown" in groups:
        parts.append(f"{len(groups['unknown'])} of unknown age {cite(groups['unknown'])}")
    return "Ages: " + "; ".join(parts) + "."


def _sexes_statement(cases: Sequence[Case]) -> str:
    groups: dict[str, list[int]] = {}
    for ref, case in enumerate(cases, start=1):
        groups.setdefault(_SEX_WORDS.get(case.sex or "", "sex unknown"), []).append(ref)
    parts = [f"{len(refs)} {word} {cite(refs)}" for word, refs in sorted(groups.items(), key=lambda g: -len(g[1]))]
    return "Sex: " + "; ".join(parts) + "."


@dataclass(frozen=True)
class Counted:
    finding: Finding
    present: list[int]  # the cases (from 1) whose text asserts it
    absent: list[int]  # those whose text says it is absent or negative (and nowhere that it is present)


def count_findings(description: str, cases: Sequence[Case]) -> list[Counted]:
    """Which cases report each finding of the description, and which say it is absent."""
    said = [sentence_terms(split_sentences(case.text or " ".join(case.passages))) for case in cases]
    out = []
    for finding in findings(description):
        status = [case_status(finding.terms, sentences) for sentences in said]
        present = [ref for ref, s in enumerate(status, start=1) if s is Status.ASSERTED]
        absent = [ref for ref, s in enumerate(status, start=1) if s is Status.NEGATED]
        out.append(Counted(finding, present, absent))
    return out


def _findings_statement(description: str, cases: Sequence[Case]) -> str:
    n = len(cases)
    parts = []
    for counted in count_findings(description, cases):
        phrase, present, absent = counted.finding.phrase, counted.present, counted.absent
        if counted.finding.negated:  # "no rash" in the description: the cases that also say so count
            part = f"“{phrase}” absent, as in the description, " + (
                f"in {len(absent)} of {n} {cite(absent)}" if absent else "in none"
            )
            if present:
                part += f" (present in {cite(present)})"
        else:
            part = f"“{phrase}” " + (f"in {len(present)} of {n} {cite(present)}" if present else "in none")
            if absent:
                part += f" (absent or negative in {cite(absent)})"
        parts.append(part)
    if not parts:
        return ""
    return (
        "Findings of the description that the case texts report (a finding that a case says is absent or "
        "negative does not count for it): " + "; ".join(parts) + "."
    )


def common_ground(description: str, cases: Sequence[Case]) -> str:
    """The extractive analysis: a label saying no model wrote it, then one statement per line."""
    if not cases:
        return f"{NO_MODEL}, and no similar cases were found."
    n = len(cases)
    header = (
        f"{NO_MODEL}, so this summary is not written by one: it counts what the {n} returned "
        f"case{'s' if n != 1 else ''} [{'1' if n == 1 else f'1-{n}'}] have in common, and each statement "
        "cites the cases it counts."
    )
    statements = [
        *_diagnoses_statements(cases),
        _ages_statement(cases),
        _sexes_statement(cases),
        _findings_statement(description, cases),
    ]
    return "\n".join([header, *(s for s in statements if s)])
