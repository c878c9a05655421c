"""Issue 17, points 6, 7, 9 and 10 without a service: ages as clinicians say them, the extractive analysis
(statements that cite the cases, no passage repeated), the extractive follow-up answer, and a synthetic
sample a clinician can read."""

from __future__ import annotations

import re

import pytest

from patientinsight.ingest.records import age_in_years
from patientinsight.ingest.sample import SYNTHETIC_TITLE, generate_rows
from patientinsight.retrieval.ages import age_band, age_display
from patientinsight.retrieval.cases import Case, is_synthetic, pmc_url
from patientinsight.retrieval.commonality import findings
from patientinsight.retrieval.generation import ExtractiveGenerator, resolve_citations
from patientinsight.retrieval.passages import best_passages


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        ([[19.0, "hour"]], "19 hours"),
        ([[1.0, "hour"]], "1 hour"),
        ([[1.0, "day"]], "1 day"),
        ([[26.0, "day"]], "26 days"),
        ([[1.0, "week"]], "1 week"),
        ([[6.0, "week"]], "6 weeks"),
        ([[1.0, "month"]], "1 month"),
        ([[10.0, "month"]], "10 months"),
        ([[12.0, "month"]], "1 year"),
        ([[2.0, "year"], [8.0, "month"]], "2 years 8 months"),
        ([[1.0, "year"], [1.0, "month"]], "1 year 1 month"),
        ([[8.0, "year"], [11.0, "month"]], "8 years 11 months"),
        ([[64.0, "year"]], "64 years"),
    ],
)
def test_age_display_reads_as_clinicians_say_it(age: list, shown: str) -> None:
    assert age_display(age_in_years(age)) == shown  # through the stored value, rounded to 4 decimals


def test_age_display_of_the_issues_examples_and_unknown_ages() -> None:
    assert [age_display(v) for v in (0.0022, 0.8333, 0.0192)] == ["19 hours", "10 months", "1 week"]
    assert age_display(None) is None and age_display(float("nan")) is None and age_display(-1.0) is None
    assert age_display(0.0) == "under 1 hour"
    assert [age_band(v) for v in (0.0022, 0.5, 4.0, 15.0, 40.0, 80.0)] == [
        "neonate", "infant", "child", "adolescent", "adult", "older adult"
    ]  # fmt: skip


def test_the_pmc_link_comes_from_the_uid() -> None:
    assert pmc_url("7665777-2") == "https://pmc.ncbi.nlm.nih.gov/articles/PMC7665777/"
    assert pmc_url("not-a-pmc-uid") is None


TEXTS = [
    "A 64-year-old man presented with fever and a productive cough. A chest radiograph showed a right lower "
    "lobe consolidation. He was treated with intravenous ceftriaxone and recovered.",
    "A 3-year-old girl had fever, a productive cough and pleuritic chest pain for two days. Her chest "
    "radiograph showed a consolidation. She underwent surgical drainage of an empyema.",
    "A 70-year-old woman had a productive cough. Spirometry showed airflow obstruction. She was treated "
    "with inhaled bronchodilators.",
]
TITLES = [
    "Community-acquired pneumonia in an older man: a case report",
    "Complicated community-acquired pneumonia with empyema in a child",
    "Chronic obstructive pulmonary disease presenting as cough",
]
QUERY = "A man with fever, productive cough and pleuritic chest pain; consolidation on the chest radiograph"


def cases() -> list[Case]:
    ages, sexes = [64.0, 3.0, 70.0], ["M", "F", "F"]
    return [
        Case(f"{100 + i}-1", str(900 + i), TITLES[i], ages[i], sexes[i], passages=best_passages(QUERY, TEXTS[i], 3),
             text=TEXTS[i])
        for i in range(3)
    ]  # fmt: skip


def test_the_extractive_analysis_counts_what_the_cases_share_and_cites_them() -> None:
    found = cases()
    analysis = ExtractiveGenerator().generate(QUERY, found)
    text = analysis.text or ""
    lines = text.splitlines()
    assert lines[0].startswith("No language model is configured") and "not written by" in lines[0]
    titles, ages, sexes, shared = lines[1:]
    assert "community-acquired pneumonia in 2 of 3 [1][2]" in titles
    assert "1 child aged 3 years [2]" in ages and "1 adult aged 64 years [1]" in ages
    assert "1 older adult aged 70 years [3]" in ages
    assert "2 female [2][3]" in sexes and "1 male [1]" in sexes
    assert "“fever” in 2 of 3 [1][2]" in shared and "“productive cough” in 3 of 3 [1][2][3]" in shared
    assert "“pleuritic chest pain” in 1 of 3 [2]" in shared
    for line in lines[1:]:  # every statement cites the cases it counts
        assert re.search(r"\[\d+\]", line), line
    assert [c["patient_uid"] for c in analysis.citations] == [c.patient_uid for c in found]
    assert analysis.citations == resolve_citations(text, found)


def test_the_extractive_analysis_repeats_no_passage() -> None:
    found = cases()
    text = ExtractiveGenerator().generate(QUERY, found).text or ""
    passages = [p for case in found for p in case.passages]
    assert passages
    for passage in passages:
        assert passage not in text
        # not even a long piece of one: no run of eight words of a passage appears in the analysis
        words = passage.split()
        assert not any(" ".join(words[i : i + 8]) in text for i in range(max(0, len(words) - 7)))


def test_the_extractive_analysis_without_cases_or_shared_titles() -> None:
    generator = ExtractiveGenerator()
    assert generator.generate(QUERY, []).text == "No language model is configured, and no similar cases were found."
    one = cases()[2:]
    text = generator.generate("Wheeze", one).text or ""
    assert "[1]" in text and "in common" in text and "Their titles" not in text


def test_findings_leave_out_who_the_patient_is() -> None:
    phrases = [f.phrase for f in findings("A 64-year-old man with fever and haemoptysis; blood glucose 32 mmol/L")]
    assert phrases == ["fever", "haemoptysis", "blood glucose 32 mmol/L"]


def test_the_extractive_follow_up_quotes_the_best_matching_sentences_and_cites_them() -> None:
    found = cases()
    answer = ExtractiveGenerator().follow_up("Which of these were treated surgically or with drainage?", found)
    text = answer.text or ""
    lines = text.splitlines()
    assert lines[0].startswith("No language model is configured") and "quoted" in lines[0]
    assert "[2] “She underwent surgical drainage of an empyema.”" in text
    assert "[1] “He was treated with intravenous ceftriaxone and recovered.”" in text
    assert {c["ref"] for c in answer.citations} == {1, 2, 3}
    unmatched = ExtractiveGenerator().follow_up("Any haemoptysis?", found).text or ""
    assert "No sentence of [1], [2], [3] shares a word with the question." in unmatched


# --- the synthetic sample (point 10) ---

PERSON = re.compile(r"^An? (\S+(?: and \S+)?-old) (.+?) presented to")


def _years(text_age: str) -> float:
    import ast

    value = age_in_years(ast.literal_eval(text_age))
    assert value is not None
    return value


def test_the_sample_keeps_its_shape() -> None:
    rows = generate_rows()
    assert rows == generate_rows() and rows != generate_rows(seed=8)
    assert len(rows) == 48 and rows[-1]["patient_uid"] == rows[3]["patient_uid"]  # the repeated uid, last
    assert all(r["file_path"].startswith("synthetic/") and SYNTHETIC_TITLE in r["title"] for r in rows)
    assert all(is_synthetic(r["title"]) for r in rows) and not is_synthetic("Community-acquired pneumonia")


def test_the_sample_reads_as_real_patients_would() -> None:
    words_by_band = {
        "neonate": {"male neonate", "newborn boy", "female neonate", "newborn girl"},
        "infant": {"male infant", "baby boy", "female infant", "baby girl"},
        "child": {"boy", "male child", "girl", "female child"},
        "adolescent": {"adolescent boy", "boy", "adolescent girl", "girl"},
        "adult": {"man", "male patient", "woman", "female patient"},
        "older adult": {"man", "male patient", "woman", "female patient"},
    }
    for row in generate_rows(articles=60, seed=3):
        years, text = _years(row["age"]), row["patient"]
        band = age_band(years)
        assert band is not None
        found = PERSON.match(text)
        assert found, text[:80]
        person = found.group(2)
        assert person in words_by_band[band], (row["age"], person)
        male = {"man", "boy", "male"} & set(person.split())
        assert bool(male) == (row["gender"] == "M"), (row["gender"], person)
        if years < 18:
            for adult_history in ("smok", "hypertension", "type 2 diabetes", "atrial fibrillation", "pack-year"):
                assert adult_history not in text, (row["age"], adult_history)
        if years < 1:
            assert "asthma" not in text and "school" not in text
        rate = int(re.search(r"heart rate (\d+)", text).group(1))  # type: ignore[union-attr]
        assert (100 <= rate <= 190) if years < 1 else (50 <= rate <= 150)
        systolic, diastolic = (int(v) for v in re.search(r"(\d+)/(\d+) mmHg", text).groups())  # type: ignore[union-attr]
        assert diastolic < systolic and ((systolic <= 100) if years < 1 else (systolic >= 85))
        condition = row["title"].split(":")[0].lower()
        if condition in ("pyloric stenosis",):
            assert years < 0.25
        if condition in ("acute myocardial infarction", "ischaemic stroke", "pulmonary embolism", "sarcoidosis"):
            assert years >= 18
        lasted = re.search(r"for (\d+) (hour|day|week|month)s?\.", text)
        assert lasted, text[:200]
        per = {"hour": 1 / (24 * 365.25), "day": 1 / 365.25, "week": 7 / 365.25, "month": 1 / 12}
        assert int(lasted.group(1)) * per[lasted.group(2)] < years  # symptoms no older than the patient
