"""Ages: the one table of years per unit, and how an age reads to a clinician: "19 hours", "1 week",
"10 months", "2 years 8 months", "64 years", and its age group.

Records keep the age in years (ingest/records.py rounds it to 4 decimals, about 53 minutes); the rest
is only how it reads.
"""

from __future__ import annotations

import math

DAYS_PER_YEAR = 365.25
HOURS_PER_YEAR = DAYS_PER_YEAR * 24.0
# Years per unit; PMC-Patients writes an age as [[value, unit], ...] whose parts add up.
YEARS_PER_UNIT = {
    "year": 1.0,
    "month": 1.0 / 12.0,
    "week": 7.0 / DAYS_PER_YEAR,
    "day": 1.0 / DAYS_PER_YEAR,
    "hour": 1.0 / HOURS_PER_YEAR,
}
# The most [value, unit] pairs an age may have: one per unit. The real records have one or two
# ([[2.0, 'year'], [8.0, 'month']]); 100,000 pairs are a broken export, not an age.
MAX_AGE_PARTS = len(YEARS_PER_UNIT)
_EPSILON = 1e-6


def _unit(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def age_display(age_years: float | None) -> str | None:
    """The age in the unit a clinician would use; None when the age is unknown.

    Under a day in hours, under a week in days, under 8 weeks in whole weeks or days (or a whole
    month), under a year in months, under 18 in years and months, then in whole years.
    """
    if age_years is None or not math.isfinite(age_years) or age_years < 0:
        return None
    hours = round(age_years * HOURS_PER_YEAR)
    if hours < 1:
        return "under 1 hour"
    if hours < 24:
        return _unit(hours, "hour")
    days = max(1, round(age_years * DAYS_PER_YEAR))
    if days < 7:
        return _unit(days, "day")
    months = round(age_years * 12)
    whole_month = abs(age_years * 12 - months) < 0.02
    if days < 56 and not (days >= 28 and whole_month and days % 7):
        return _unit(days // 7, "week") if days % 7 == 0 else _unit(days, "day")
    if months < 12:
        return _unit(max(1, months), "month")
    years = math.floor(age_years + _EPSILON)
    if years >= 18:
        return _unit(years, "year")
    months = round((age_years - years) * 12)
    if months >= 12:
        years, months = years + 1, 0
    return _unit(years, "year") + (f" {_unit(months, 'month')}" if months else "")


def age_band(age_years: float | None) -> str | None:
    """The clinical age group: neonate (under 28 days), infant, child, adolescent, adult, older adult."""
    if age_years is None or not math.isfinite(age_years) or age_years < 0:
        return None
    if age_years * DAYS_PER_YEAR < 28 - 0.5:
        return "neonate"
    if age_years < 1.0 - _EPSILON:
        return "infant"
    if age_years < 13:
        return "child"
    if age_years < 18:
        return "adolescent"
    if age_years < 65:
        return "adult"
    return "older adult"
