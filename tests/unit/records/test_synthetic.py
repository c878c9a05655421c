"""The synthetic sample a clinician can read (issue 17, point 10): its shape, and patients whose words,
history, vital signs and symptoms fit their age and sex."""

from __future__ import annotations

import re

from patientinsight.ingest.records import age_in_years
from patientinsight.records.ages import age_band
from patientinsight.records.synthetic import SYNTHETIC_TITLE, generate_rows
from patientinsight.retrieval.cases import is_synthetic

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
