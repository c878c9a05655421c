"""What a sentence asserts (issue 26, item 2): NegEx-style cues, checked on invented sentences for each rule
and on the real records' own sentences for each kind of cue; and the extractive analysis, which no longer
counts a finding for a case that says it is absent or negative."""

from __future__ import annotations

import re

import pytest

from patientinsight.generation.commonality import common_ground, count_findings, findings
from patientinsight.generation.negation import Status, pieces, sentence_terms
from patientinsight.index.lexical import tokenize
from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.passages import split_sentences

pytestmark = pytest.mark.realdata


def status(sentence: str, words: str) -> Status | None:
    return sentence_terms([sentence])[0].status_of(frozenset(tokenize([words])[0]))


@pytest.mark.parametrize(
    ("sentence", "words", "expected"),
    [
        ("He had no fever.", "fever", Status.NEGATED),
        ("She denied chest pain, palpitations and syncope.", "syncope", Status.NEGATED),
        ("Serology was negative for ANA, anti-dsDNA and ANCA.", "ANCA", Status.NEGATED),
        ("Blood cultures and a urine culture were negative.", "blood cultures", Status.NEGATED),
        ("Pulmonary embolism was ruled out.", "pulmonary embolism", Status.NEGATED),
        ("The abdomen was unremarkable.", "abdomen", Status.NEGATED),
        ("Bowel sounds were absent.", "bowel sounds", Status.NEGATED),
        ("There was no rash but a fever of 39 °C.", "fever", Status.ASSERTED),  # "but" ends the scope
        ("No rash was seen; the fever persisted.", "fever", Status.ASSERTED),  # so does the clause
        ("There was no change in the rash.", "rash", Status.ASSERTED),  # "no change" negates nothing
        ("She was screened for lupus.", "lupus", Status.UNCERTAIN),
        ("A lymphoma could not be ruled out.", "lymphoma", Status.UNCERTAIN),
        ("Complement levels were not checked.", "complement", Status.UNCERTAIN),
        ("Gram-negative rods grew in the blood cultures.", "blood cultures", Status.ASSERTED),
        ("He was febrile.", "rash", None),
    ],
)
def test_each_cue_governs_its_scope(sentence: str, words: str, expected: Status | None) -> None:
    assert status(sentence, words) is expected


def test_cue_words_are_never_asserted_findings() -> None:
    asserted = [p.text for p in pieces("Antinuclear antibodies were positive, anti-dsDNA negative.")]
    assert asserted == ["Antinuclear antibodies were positive,", " anti-dsDNA negative", "."]
    said = sentence_terms(["She denied fever."])[0]
    assert said.negated == {"deni", "fever"} and not said.asserted & said.negated


# Each real sentence with the cue says of the word(s) the pattern takes what the cue says; a word whose stem
# is also used elsewhere in its sentence (asserted there, perhaps) is left out.
REAL_CUES = [
    (r"\bnegative for (?:any |an? |the )?([A-Za-z][\w-]{3,})", Status.NEGATED),
    (r"\bno (?:evidence|signs?) of (?:any |an? |the )?([A-Za-z][\w-]{3,})", Status.NEGATED),
    (r"\bden(?:ied|ies) (?:any |a |the )?([A-Za-z][\w-]{3,})", Status.NEGATED),
    (r"\bwithout (?:any |an? |the )?(?!difficulty|delay)([A-Za-z][\w-]{3,})", Status.NEGATED),
    (r"\b([A-Za-z][\w-]{3,}) (?:was|were) (?:negative\b(?! for)|ruled out|absent|unremarkable)", Status.NEGATED),
    (r"\bpositive for (?:an? |the )?([A-Za-z][\w-]{3,})", Status.ASSERTED),
]
NEGATION_WORDS = re.compile(r"\b(?:no|not|without|negative|den\w+|absent|ruled|none|nor|neither|unremarkable)\b", re.I)


@pytest.mark.parametrize(("pattern", "expected"), REAL_CUES, ids=[p for p, _ in REAL_CUES])
def test_real_sentences_with_each_cue(real_cases: list[Case], pattern: str, expected: Status) -> None:
    cue = re.compile(pattern, re.IGNORECASE)
    checked, wrong = 0, []
    for case in real_cases:
        for sentence in split_sentences(case.text):
            found = cue.search(sentence)
            if not found or (expected is Status.ASSERTED and NEGATION_WORDS.search(sentence)):
                continue
            stem = tokenize([found.group(1)])[0]
            if len(stem) != 1 or tokenize([sentence])[0].count(stem[0]) != 1:
                continue
            checked += 1
            if status(sentence, found.group(1)) is not expected:
                wrong.append((case.patient_uid, found.group(1)))
    assert checked >= 50, checked  # the real records have many of each
    assert wrong == []


def test_descriptions_can_negate_too() -> None:
    said = {f.phrase: f.negated for f in findings("Fever and a productive cough without haemoptysis; no rash")}
    assert said == {"Fever": False, "productive cough": False, "haemoptysis": True, "rash": True}


# The clinician's report: anti-double-stranded DNA "in 3 of 5" where the cases said it was negative.
DESCRIPTION = "A woman with proteinuria, antinuclear antibodies and anti-double-stranded DNA"
DS_DNA = re.compile(r"anti-double[- ]stranded DNA", re.IGNORECASE)


def test_the_analysis_counts_no_finding_that_a_real_case_says_is_negative(real_cases: list[Case]) -> None:
    cases = [c for c in real_cases if DS_DNA.search(c.text)]
    # The test's own reading of the records: which cases state the antibody negative (or not found).
    negative = [
        ref
        for ref, case in enumerate(cases, start=1)
        if any(DS_DNA.search(s) and re.search(r"\bnegative\b|\bdid not\b", s) for s in split_sentences(case.text))
    ]
    assert len(negative) >= 3  # the real records state it negative, in several ways
    counted = {c.finding.phrase: c for c in count_findings(DESCRIPTION, cases)}
    ds_dna = counted["anti-double-stranded DNA"]
    assert not set(ds_dna.present) & set(negative)
    assert set(negative) <= set(ds_dna.absent)
    assert counted["antinuclear antibodies"].present  # and a finding that they do report still counts
    text = common_ground(DESCRIPTION, cases)
    absent = "".join(f"[{ref}]" for ref in ds_dna.absent)
    if ds_dna.present:
        assert f"“anti-double-stranded DNA” in {len(ds_dna.present)} of {len(cases)} " in text
    else:
        assert "“anti-double-stranded DNA” in none" in text
    assert f"(absent or negative in {absent})" in text
