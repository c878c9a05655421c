"""Follow-up answers that match the question's intent (issue 26, item 3): "treated surgically" is answered
by sentences about operations, not by every sentence with "treated"; medications by drugs; outcomes by
discharge, death, recovery and follow-up. Checked on invented sentences and on the real records."""

from __future__ import annotations

import re

import pytest

from patientinsight.generation.extractive import ExtractiveGenerator
from patientinsight.generation.intents import MEDICATION, OUTCOME, SURGERY, TREATMENT, question_intents
from patientinsight.generation.quoting import intent_sentences
from patientinsight.retrieval.cases import Case


@pytest.mark.parametrize(
    ("question", "intents"),
    [
        ("Which of these patients were treated surgically?", [SURGERY]),
        ("Who was operated on?", [SURGERY]),
        ("What medications were they given?", [MEDICATION]),
        ("What was the outcome?", [OUTCOME]),
        ("Which drugs were given, and did they survive?", [MEDICATION, OUTCOME]),
        ("How were they treated?", [TREATMENT]),
        ("Any haemoptysis?", []),
    ],
)
def test_what_a_question_asks_about(question: str, intents: list) -> None:  # type: ignore[type-arg]
    assert question_intents(question) == intents


TEXT = (
    "She underwent a CT scan of the abdomen. Surgery was declined by her family at first. She was treated with "
    "intravenous ceftriaxone. Serum insulin was within normal limits. A purulent discharge came from the wound. "
    "She was started on prednisone 40 mg daily. She then underwent a laparoscopic right hemicolectomy. "
    "She was discharged home on day 5 and was well at follow-up."
)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Which were treated surgically?", ["She then underwent a laparoscopic right hemicolectomy."]),
        (
            "Which medications?",
            ["She was started on prednisone 40 mg daily.", "She was treated with intravenous ceftriaxone."],
        ),
        ("What was the outcome?", ["She was discharged home on day 5 and was well at follow-up."]),
    ],
)
def test_only_sentences_that_assert_the_intent_answer(question: str, expected: list[str]) -> None:
    assert set(intent_sentences(question, TEXT, 3, question_intents(question))) == set(expected)


def test_the_question_s_other_words_rank_the_answers() -> None:
    text = "He had a right nephrectomy in 1990. An empyema was drained surgically. He recovered."
    question = "Was the empyema treated surgically?"
    assert intent_sentences(question, text, 1, question_intents(question)) == ["An empyema was drained surgically."]


# The test's own reading of "about surgery": a word for an operation.
SURGICAL = re.compile(
    r"surg|operat|resect|excis|ectom|otom(?:y|ies)\b|ostom|plast(?:y|ies)\b|amputat|laparoscop|thoracoscop"
    r"|transplant|graft|bypass|fixation|replacement|repair|ligat|debride|enucleat|anastomos|\bflap\b|ORIF"
    r"|pex(?:y|ies)\b|rrhaph",
    re.IGNORECASE,
)
QUOTE = re.compile(r"“(.*?)”")


def quoted(answer: str) -> dict[int, list[str]]:
    """The sentences an extractive answer quotes, by the case they come from."""
    out = {}
    for line in answer.splitlines()[1:]:
        ref = re.match(r"\[(\d+)\] “", line)
        if ref:
            out[int(ref.group(1))] = QUOTE.findall(line)
    return out


@pytest.mark.realdata
def test_treated_surgically_quotes_only_sentences_about_surgery(real_cases: list[Case]) -> None:
    cases = real_cases[:250]
    # What the old answer quoted for these cases: sentences with "treated" that are about no operation.
    assert sum(bool(re.search(r"\btreated\b", c.text)) and not SURGICAL.search(c.text) for c in cases) >= 10
    question = "Which of these patients were treated surgically?"
    answered = 0
    for start in range(0, len(cases), 5):
        group = cases[start : start + 5]
        text = ExtractiveGenerator().follow_up(question, group).text or ""
        assert "No language model is configured" in text and "about surgery" in text
        for ref, sentences in quoted(text).items():
            answered += 1
            for sentence in sentences:
                assert SURGICAL.search(sentence), (group[ref - 1].patient_uid, sentence)
                assert sentence in group[ref - 1].text  # quoted as it is
        # a case that plainly says it was operated on is answered
        for ref, case in enumerate(group, start=1):
            if re.search(r"\b(?:underwent|performed) (?:an? |the )?(?:\w+ ){0,3}\w+ectomy\b", case.text):
                assert ref in quoted(text), case.patient_uid
    assert answered >= 60  # and many real cases are


OUTCOME_WORDS = re.compile(
    r"discharg|died|death|deceased|expired|passed away|succumb|recover|remission|resol|relaps|recurr|alive"
    r"|surviv|fatal|uneventful|asymptomatic|improv|follow|prognosis|outcome",
    re.IGNORECASE,
)


@pytest.mark.realdata
def test_the_outcome_is_answered_from_outcome_sentences(real_cases: list[Case]) -> None:
    answered = 0
    for start in range(0, 100, 5):
        group = real_cases[start : start + 5]
        text = ExtractiveGenerator().follow_up("What was their outcome?", group).text or ""
        for sentences in quoted(text).values():
            assert all(OUTCOME_WORDS.search(s) for s in sentences), sentences
            assert not any(re.search(r"(?:nipple|vaginal|purulent|nasal) discharge", s) for s in sentences)
            answered += bool(sentences)
    assert answered >= 60  # of the 100 real cases (76 when written): most report how the patient did
