"""What the generation tests share: the real PMC-Patients records as cases (skipped where they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from patientinsight.retrieval.cases import Case
from tests.helpers import real_records


@pytest.fixture(scope="session")
def real_cases(real_data_dir: Path) -> list[Case]:
    """The 1,000 real records, in file order, as the cases of an answer (whole text, no passages)."""
    records = real_records(real_data_dir)
    return [Case(row.uid, row.pmid, row.title, row.age_years, row.sex, text=row.text) for row in records.itertuples()]
