"""The page's analysis on real records (issue 26, item 2), in a real headless Chromium: a finding that a
case's text says is absent or negative ("anti-double-stranded DNA antibodies were negative") is never shown
as present in that case. The index is built by the real ingest from real PMC-Patients records (read from
../shared, never copied into the repository); the module skips without them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from patientinsight.index.lexical import tokenize
from patientinsight.retrieval.passages import split_sentences
from tests.helpers import REAL_CSV, read_rows, write_rows
from tests.serving import test_page_clinician as page
from tests.serving.conftest import served
from tests.serving.service import Service

pytestmark = pytest.mark.realdata

QUERY = "Proteinuria and haematuria with antinuclear antibodies and anti-double-stranded DNA antibodies"
# The real records that speak of the query's topic, and the first others of the file, as the index.
TOPIC = re.compile(r"double[- ]stranded DNA|dsDNA|lupus|antinuclear", re.IGNORECASE)
OTHERS = 100
# The test's own reading of a clause that negates what it mentions.
NEGATION = re.compile(
    r"\b(?:no|not|without|negative|denied|denies|absent|unremarkable|ruled out|none|neither|nor)\b", re.IGNORECASE
)
CLAUSES = re.compile(r"[;:]|\\n|\bbut\b|\bhowever\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def real_rows(real_data_dir: Path) -> list[dict[str, str]]:
    rows = read_rows(real_data_dir / REAL_CSV)
    return [row for number, row in enumerate(rows) if number < OTHERS or TOPIC.search(row["patient"])]


@pytest.fixture(scope="module")
def real_service(real_rows: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service in development mode over an index of the real rows, built by run_ingest."""
    from patientinsight.ingest.run import run_ingest
    from patientinsight.settings import Settings

    source = write_rows(tmp_path_factory.mktemp("real-source") / "real.csv", real_rows)
    home = tmp_path_factory.mktemp("real-home")
    report = run_ingest(str(source), Settings(home=home), run_id="page-negation")
    assert report["published"], report
    env = {"PATIENTINSIGHT_DEV_MODE": "true", "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "100000"}
    with served(home, tmp_path_factory.mktemp("real-dev"), env).running() as service:
        yield service


def counted_findings(analysis: str) -> dict[str, tuple[list[int], list[int]]]:
    """The findings line of the page's analysis: each finding -> (cases shown as having it, cases shown as
    saying it is absent or negative)."""
    line = next(line for line in analysis.splitlines() if line.startswith("Findings"))
    out = {}
    for part in line.split(": ", 1)[1].rstrip(".").split("; "):
        said = re.match(
            r"“(.+?)” (?:in none|in \d+ of \d+ ((?:\[\d+\])+))(?: \(absent or negative in ((?:\[\d+\])+)\))?$", part
        )
        assert said, part
        present, absent = (re.findall(r"\d+", group or "") for group in said.group(2, 3))
        out[said.group(1)] = ([int(n) for n in present], [int(n) for n in absent])
    return out


def clauses_mentioning(phrase: str, text: str) -> list[str]:
    """The clauses of `text` that have every word of `phrase` (as the lexical index stems them)."""
    wanted = set(tokenize([phrase])[0])
    clauses = [c for s in split_sentences(text) for c in CLAUSES.split(s)]
    return [c for c, terms in zip(clauses, tokenize(clauses), strict=True) if wanted <= set(terms)]


def test_the_analysis_shows_no_negated_finding_as_present(
    real_service: Service,
    real_rows: list[dict[str, str]],
    browser,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selenium.webdriver.common.by import By

    texts = {row["patient_uid"]: row["patient"] for row in real_rows}
    browser.set_window_size(1280, 1000)
    monkeypatch.setattr(page, "QUERY", QUERY)  # what page.ask types
    page.ask(browser, real_service.url, k=5)
    uids = [item.get_attribute("data-uid") for item in browser.find_elements(By.CSS_SELECTOR, "#cases > li")]
    analysis = browser.find_element(By.ID, "analysis-text").text
    assert "not written by" in analysis
    counted = counted_findings(analysis)

    for phrase, (present, _) in counted.items():
        for ref in present:  # shown as present: the case says so in a clause that negates nothing
            clauses = clauses_mentioning(phrase, texts[uids[ref - 1]])
            assert any(not NEGATION.search(c) for c in clauses), (phrase, uids[ref - 1], len(clauses))

    # The clinician's case: returned cases that state the antibody negative, and the page says so of them.
    dsdna = "anti-double-stranded DNA antibodies"
    negative = [
        ref
        for ref, uid in enumerate(uids, start=1)
        if (clauses := clauses_mentioning(dsdna, texts[uid])) and all(NEGATION.search(c) for c in clauses)
    ]
    assert negative, "no returned case states the antibody negative: the query no longer tests the point"
    present, absent = counted[dsdna]
    assert not set(present) & set(negative) and set(negative) <= set(absent)
    assert "Diagnoses they share" in analysis or "no diagnosis in common" in analysis
    page.shot(browser, "analysis-negation-real")
