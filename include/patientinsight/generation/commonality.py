"""What the returned cases have in common, counted rather than written: the extractive analysis.

No language model is involved, and the page says so. Each statement cites the cases it counts ([n], their
position in the answer): the diagnoses their titles share, the age groups and sexes, and which of the
description's findings each case's text mentions. The passages are not repeated: they are shown with the
cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from patientinsight.index.lexical import tokenize
from patientinsight.records.ages import age_band, age_display
from patientinsight.retrieval.cases import Case

NO_MODEL = "No language model is configured"
MAX_FINDINGS = 8
MAX_TITLE_PHRASES = 4

# Words of a description that say who the patient is, not what they have; and question words.
_PERSON_WORDS = (
    "man woman boy girl male female infant neonate newborn baby child children adult aged year month week day "
    "hour old patient presented presenting history describe which were was who what how many any did does "
    "case cases these those"
)
_PERSON_TERMS = frozenset(tokenize([_PERSON_WORDS])[0])
_FINDING_SPLIT = re.compile(r"[,;:.!?()\[\]\n]+|\s(?:and|with|or|but|plus|without|who|after)\s", re.IGNORECASE)
_LEADING = re.compile(r"^(?:(?:a|an|the|has|had|have|his|her|their|presents?|presented|of|in|on)\s+)+", re.IGNORECASE)

# Words of a title that name no diagnosis.
_TITLE_WORDS_WITHOUT_DIAGNOSIS = """
    a an the of in on at to for with and or by from as is are was were its their his her after before during
    due via vs versus into without case cases report reports series synthetic rare unusual uncommon patient
    patients review literature novel presentation presenting treatment treated management diagnosis diagnosed
    approach new young old woman man girl boy child children adult infant female male unique interesting
    challenging successful associated related secondary following induced manifestation first
"""
_TITLE_STOP = frozenset(_TITLE_WORDS_WITHOUT_DIAGNOSIS.split())
_TITLE_SEGMENTS = re.compile(r"[:;,.()?!\[\]\"“”]+")
_TITLE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’/-]*")

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
    phrase: str  # as the description says it
    terms: frozenset[str]  # its stemmed words, as the lexical index has them


def findings(description: str) -> list[Finding]:
    """The description cut into findings ("fever", "productive cough"), each with the terms it needs.
    Words about who the patient is, and numbers, are not findings."""
    out: list[Finding] = []
    seen: set[frozenset[str]] = set()
    for part in _FINDING_SPLIT.split(description):
        phrase = _LEADING.sub("", " ".join(part.split())).strip()
        if not phrase:
            continue
        terms = frozenset(t for t in tokenize([phrase])[0] if not t.isdigit() and t not in _PERSON_TERMS)
        if terms and terms not in seen:
            seen.add(terms)
            out.append(Finding(phrase, terms))
    return out[:MAX_FINDINGS]


def _case_terms(case: Case) -> set[str]:
    return set(tokenize([case.text or " ".join(case.passages)])[0])


def _title_phrases(titles: Sequence[str | None]) -> list[tuple[str, list[int]]]:
    """Word sequences (up to four words, no filler) that at least two titles share, with the cases (from 1)
    whose titles have them: the longest and most shared first."""
    found: dict[tuple[str, ...], set[int]] = {}
    surface: dict[tuple[str, ...], str] = {}
    for ref, title in enumerate(titles, start=1):
        for segment in _TITLE_SEGMENTS.split(title or ""):
            run: list[str] = []
            for word in [*_TITLE_WORD.findall(segment), ""]:  # "" ends the last run
                if word and word.lower() not in _TITLE_STOP and not word.isdigit():
                    run.append(word)
                    continue
                for size in range(1, min(4, len(run)) + 1):
                    for start in range(len(run) - size + 1):
                        words = run[start : start + size]
                        key = tuple(w.lower() for w in words)
                        found.setdefault(key, set()).add(ref)
                        surface.setdefault(key, " ".join(w if w[1:] != w[1:].lower() else w.lower() for w in words))
                run = []
    shared = {key: refs for key, refs in found.items() if len(refs) >= 2}

    def inside(small: tuple[str, ...], big: tuple[str, ...]) -> bool:
        return len(small) < len(big) and any(big[i : i + len(small)] == small for i in range(len(big) - len(small) + 1))

    kept = [
        key for key, refs in shared.items() if not any(inside(key, other) and refs <= shared[other] for other in shared)
    ]
    kept.sort(key=lambda key: (-len(shared[key]), -len(key), min(shared[key])))
    return [(surface[key], sorted(shared[key])) for key in kept[:MAX_TITLE_PHRASES]]


def _titles_statement(cases: Sequence[Case]) -> str:
    n = len(cases)
    phrases = _title_phrases([c.title for c in cases])
    if not phrases:
        return "Their titles name no diagnosis in common." if n > 1 else ""
    parts = [f"{phrase} in {len(refs)} of {n} {cite(refs)}" for phrase, refs in phrases]
    return "Their titles share: " + "; ".join(parts) + "."


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


def _findings_statement(description: str, cases: Sequence[Case]) -> str:
    wanted = findings(description)
    if not wanted:
        return ""
    terms = [_case_terms(case) for case in cases]
    n = len(cases)
    parts = []
    for finding in wanted:
        refs = [ref for ref, have in enumerate(terms, start=1) if finding.terms <= have]
        if refs:
            parts.append(f"“{finding.phrase}” in {len(refs)} of {n} {cite(refs)}")
        else:
            parts.append(f"“{finding.phrase}” in none")
    return "Findings of the description that the case texts mention: " + "; ".join(parts) + "."


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
        _titles_statement(cases),
        _ages_statement(cases),
        _sexes_statement(cases),
        _findings_statement(description, cases),
    ]
    return "\n".join([header, *(s for s in statements if s)])
