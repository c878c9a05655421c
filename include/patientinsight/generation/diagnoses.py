"""What diagnoses the returned cases share, and what other words their titles share: the phrases of the
titles and of the sentences that state a diagnosis ("she was diagnosed with ...", "a diagnosis of ... was
made"), compared across cases word by stemmed word.

A shared phrase is a diagnosis when a case's text states it as one, or when its last word names one (an
-itis, -oma, -osis..., a syndrome, a fracture...); those come first. Words that name nothing on their own
("acute", "disease", "case", "rare") are never reported alone, though "acute pancreatitis" is; nor is any
other single title word ("artery", "using").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from patientinsight.generation.negation import Status, sentence_terms
from patientinsight.index.lexical import tokenize
from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.passages import split_sentences

MAX_DIAGNOSES = 4
MAX_TITLE_PHRASES = 2  # of the title words that are no diagnosis: they say less
MAX_WORDS = 4  # in a phrase

# Words that break a phrase of a title: they name no diagnosis.
_TITLE_WORDS_WITHOUT_DIAGNOSIS = """
    a an the of in on at to for with and or by from as is are was were its their his her after before during
    due via vs versus into without case cases report reports series synthetic rare unusual uncommon patient
    patients review literature novel presentation presenting treatment treated management diagnosis diagnosed
    approach new young old woman man girl boy child children adult infant female male unique interesting
    challenging successful associated related secondary following induced manifestation first using causing
    caused mimicking masquerading despite between within through among about two three four five year years
    month months week weeks day days
"""
# ... and also those of a sentence stating a diagnosis, where the phrase ends at its verb or its time.
_DIAGNOSIS_SENTENCE_STOP = """
    be been being has have had having made confirmed established suspected considered based reached supported
    later then finally subsequently eventually initially also likely probably possibly about ago when since
    while which who whom that this these those exclusion final
"""
_TITLE_STOP = frozenset(_TITLE_WORDS_WITHOUT_DIAGNOSIS.split())
_SENTENCE_STOP = _TITLE_STOP | frozenset(_DIAGNOSIS_SENTENCE_STOP.split())
# Words that are never a shared finding on their own, though they belong to phrases that are.
_GENERIC_WORDS = """
    acute chronic subacute disease diseases disorder disorders syndrome syndromes condition conditions infection
    infections severe mild moderate primary recurrent multiple bilateral left right giant large small complex
    atypical isolated idiopathic congenital complicated complication complications fatal lesion lesions mass
    masses tumor tumors tumour tumours unknown origin type cause causes early late
"""
_GENERIC = frozenset(_GENERIC_WORDS.split())
# The last word of a phrase that names a diagnosis.
_DIAGNOSIS_HEAD = re.compile(
    r"""(?:itis|itides|osis|oses|oma|omas|omata|emia|aemia|emias|pathy|pathies|plasia|trophy|iasis|penia|cytosis
    |algia|ectasis|ocele|syndrome|disease|disorder|cancer|tumou?rs?|infection|deficiency|failure|injury|fracture
    |aneurysm|insufficiency|malformation|anomaly|cyst|abscess|palsy|pneumonia|embolism|infarction|infarct
    |h(?:a)?emorrhage|dissection|rupture|obstruction|atresia|shock|sepsis|arrest|neoplasm|metastas[ie]s|polyp
    |hernia|ulcer|fistula|effusion|intussusception|torsion|perforation|hypertension|diabetes|mellitus|asthma
    |lupus|covid-19|dengue|malaria|fibrillation|block|stroke|thrombus|occlusion|leak|prolapse|reflux)$""",
    re.IGNORECASE | re.VERBOSE,
)
# Where a sentence states a diagnosis; the phrase follows (up to its first comma, bracket or verb).
_STATES_DIAGNOSIS = re.compile(
    r"\b(?:diagnosed\s+(?:with|as)(?:\s+having)?|diagnosis\s+(?:of|was|is))\s+(?P<phrase>[^,;:.()\[\]]+)",
    re.IGNORECASE,
)
_SEGMENTS = re.compile(r"[:;,.()?!\[\]\"“”]+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’/-]*")


@dataclass(frozen=True)
class Shared:
    phrase: str  # as the first case says it
    refs: list[int]  # the cases (from 1) that have it
    diagnosis: bool


def _runs(text: str, stop: frozenset[str]) -> list[list[str]]:
    """The word sequences of `text` between its punctuation and its stop words (no numbers)."""
    runs: list[list[str]] = []
    for segment in _SEGMENTS.split(text):
        run: list[str] = []
        for word in [*_WORD.findall(segment), ""]:  # "" ends the last run
            if word and word.lower() not in stop and not word.isdigit():
                run.append(word)
            elif run:
                runs.append(run)
                run = []
    return runs


def stated_diagnoses(sentences: Sequence[str]) -> list[list[str]]:
    """The diagnoses that a case's sentences state as made: the first run of words after "diagnosed with"
    and the like, when the sentence asserts it ("a lymphoma was ruled out", "the differential diagnosis of
    ..." state none)."""
    found: list[tuple[str, list[str]]] = []
    for sentence in sentences:
        for match in _STATES_DIAGNOSIS.finditer(sentence):
            runs = _runs(match.group("phrase"), _SENTENCE_STOP)
            if runs:
                found.append((sentence, runs[0][:MAX_WORDS]))
    if not found:
        return []
    said = sentence_terms([sentence for sentence, _ in found])
    terms = tokenize([" ".join(words) for _, words in found])
    return [
        words
        for (_, words), told, phrase_terms in zip(found, said, terms, strict=True)
        if phrase_terms and told.status_of(frozenset(phrase_terms)) is Status.ASSERTED
    ]


def shared_phrases(cases: Sequence[Case]) -> list[Shared]:
    """Phrases (up to four words) that at least two cases share, in their titles or stated diagnoses: the
    diagnoses first, then the other title words; within each, the most shared and the longest first. A
    phrase inside a longer one that the same cases share is left out."""
    found: dict[tuple[str, ...], set[int]] = {}
    surface: dict[tuple[str, ...], str] = {}
    stated: set[tuple[str, ...]] = set()
    for ref, case in enumerate(cases, start=1):
        title_runs = _runs(case.title or "", _TITLE_STOP)
        text_runs = stated_diagnoses(split_sentences(case.text or " ".join(case.passages)))
        runs = title_runs + text_runs
        stems = _stems([w for run in runs for w in run])
        for number, run in enumerate(runs):
            for size in range(1, min(MAX_WORDS, len(run)) + 1):
                for start in range(len(run) - size + 1):
                    words = run[start : start + size]
                    key = tuple(stems[w.lower()] for w in words)
                    if all(w.lower() in _GENERIC for w in words):
                        continue
                    found.setdefault(key, set()).add(ref)
                    surface.setdefault(key, " ".join(w if w[1:] != w[1:].lower() else w.lower() for w in words))
                    if number >= len(title_runs) and start + size == len(run):  # "palsy", not "progressive"
                        stated.add(key)
    shared = {key: refs for key, refs in found.items() if len(refs) >= 2}

    def inside(small: tuple[str, ...], big: tuple[str, ...]) -> bool:
        return len(small) < len(big) and any(big[i : i + len(small)] == small for i in range(len(big) - len(small) + 1))

    kept = [
        key for key, refs in shared.items() if not any(inside(key, other) and refs <= shared[other] for other in shared)
    ]
    kept.sort(key=lambda key: (-len(shared[key]), -len(key), min(shared[key])))
    out = [Shared(surface[key], sorted(shared[key]), key in stated or _names_diagnosis(surface[key])) for key in kept]
    diagnoses = [s for s in out if s.diagnosis][:MAX_DIAGNOSES]
    others = [s for s in out if not s.diagnosis and _says_something(s.phrase)][:MAX_TITLE_PHRASES]
    return diagnoses + others


def _says_something(phrase: str) -> bool:
    """A title phrase that is no diagnosis is worth reporting when it has two words or more ("external
    fixation"), or is an abbreviation ("HIV"); a single word ("artery", "pediatric") says too little."""
    return " " in phrase or (len(phrase) > 1 and phrase.isupper())


def _names_diagnosis(phrase: str) -> bool:
    last = phrase.split()[-1]
    singular = last[:-3] + "y" if last.endswith("ies") else last.removesuffix("s")  # "injuries", "cysts"
    return bool(_DIAGNOSIS_HEAD.search(last) or _DIAGNOSIS_HEAD.search(singular))


def _stems(words: list[str]) -> dict[str, str]:
    """Each word (lower-cased) to its stem, so that "tumors" meets "tumor"; a stop word of the lexical index
    ("ALL", the leukaemia) stays itself."""
    lowered = sorted({w.lower() for w in words})
    return {w: " ".join(t) or w for w, t in zip(lowered, tokenize(lowered), strict=True)} if lowered else {}
