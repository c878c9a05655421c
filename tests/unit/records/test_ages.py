"""Ages as clinicians say them (issue 17, point 6): "19 hours", "2 years 8 months", and the age bands."""

from __future__ import annotations

import pytest

from patientinsight.ingest.records import age_in_years
from patientinsight.records.ages import age_band, age_display


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
