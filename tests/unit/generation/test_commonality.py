"""The findings of a description that the extractive analysis counts in the cases."""

from __future__ import annotations

from patientinsight.generation.commonality import findings


def test_findings_leave_out_who_the_patient_is() -> None:
    phrases = [f.phrase for f in findings("A 64-year-old man with fever and haemoptysis; blood glucose 32 mmol/L")]
    assert phrases == ["fever", "haemoptysis", "blood glucose 32 mmol/L"]
