"""The diagnoses the cases share (issue 26, item 2): from their titles and from the sentences that state a
diagnosis, ranked above other shared title words; words that name nothing alone ("acute", "disease") are
never a shared phrase."""

from __future__ import annotations

import random
import re

import pytest

from patientinsight.generation.commonality import common_ground
from patientinsight.generation.diagnoses import shared_phrases, stated_diagnoses
from patientinsight.retrieval.cases import Case


def case(title: str, text: str = "") -> Case:
    return Case("1-1", "1", title, 40.0, "F", text=text)


def test_generic_title_words_are_not_shared_findings() -> None:
    cases = [
        case("Acute pancreatitis after a marathon: a rare case report"),
        case("Acute kidney disease in a rare case of sarcoidosis"),
    ]
    assert shared_phrases(cases) == []
    assert "Their titles and texts name no diagnosis in common." in common_ground("Abdominal pain", cases)


def test_stated_diagnoses_come_before_other_title_words() -> None:
    cases = [
        case("Care at a rural hospital: a case report", "She was diagnosed with sarcoidosis of the lung."),
        case("Sarcoidosis seen at a rural hospital"),
        case("Rural hospital imaging of the chest"),
    ]
    lines = common_ground("Cough", cases).splitlines()
    assert lines[1] == "Diagnoses they share (from their titles and texts): sarcoidosis in 2 of 3 [1][2]."
    assert lines[2] == "Their titles also share: rural hospital in 3 of 3 [1][2][3]."


def test_a_diagnosis_counts_only_where_a_sentence_asserts_it() -> None:
    sentences = [
        "A diagnosis of tuberculosis was made on biopsy.",
        "He was not diagnosed with lymphoma.",
        "The differential diagnosis of sarcoidosis was considered.",
        "She was diagnosed with systemic lupus erythematosus (SLE) in 2010.",
    ]
    assert stated_diagnoses(sentences) == [["tuberculosis"], ["systemic", "lupus", "erythematosus"]]
    cases = [
        case("Fever in a traveller", "A diagnosis of lymphoma was ruled out."),
        case("Night sweats", "She was diagnosed with lymphoma after a node biopsy."),
        case("Weight loss", "He was diagnosed with Lymphomas of the bowel."),
    ]
    assert [(s.phrase, s.refs) for s in shared_phrases(cases)] == [("lymphoma", [2, 3])]


GENERIC = {"acute", "chronic", "disease", "syndrome", "severe", "case", "report", "rare", "unusual"}


@pytest.mark.realdata
def test_real_groups_share_diagnoses_not_generic_words(real_cases: list[Case]) -> None:
    groups = [random.Random(seed).sample(real_cases, 5) for seed in range(150)]
    # The real titles do share generic words (the old analysis reported "acute", "disease")...
    title_words = [[set(re.findall(r"[a-z]+", (c.title or "").lower())) for c in group] for group in groups]
    assert sum(any(sum(w in t for t in titles) >= 2 for w in GENERIC) for titles in title_words) >= 20
    diagnoses = 0
    for group in groups:
        shared = shared_phrases(group)
        for phrase in shared:  # ...and none is a shared phrase now
            assert not set(phrase.phrase.lower().split()) <= GENERIC, phrase
        # diagnoses first
        assert [s.diagnosis for s in shared] == sorted((s.diagnosis for s in shared), reverse=True)
        diagnoses += any(s.diagnosis for s in shared)
    assert diagnoses >= 10  # random real cases do share diagnoses now and then
