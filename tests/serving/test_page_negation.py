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
from tests.serving.conftest import served
from tests.serving.page import ask, shot
from tests.serving.service import Service

pytestmark = pytest.mark.realdata

QUERY = "Proteinuria and haematuria with antinuclear antibodies and anti-double-stranded DNA antibodies"
# The real records that speak of the query's topic, and the first others of the file, as the index.
TOPIC = re.compile(r"double[- ]stranded DNA|dsDNA|lupus|antinuclear", re.IGNORECASE)
OTHERS = 100
# The test's own reading of a clause that negates a finding it mentions, NegEx's in its simplest form: a cue
# anywhere before the finding in the clause ("no fever or proteinuria"), or one of the words after it within
# five words ("proteinuria was absent"); so "the significant proteinuria ... and the negative prognostic
# features" asserts proteinuria.
BEFORE = re.compile(r"\b(?:no|not|without|denied|denies|none|neither|nor|negative for|ruled out|free of)\b")
AFTER = re.compile(r"\b(?:not|negative|absent|unremarkable|ruled out|excluded)\b")
WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
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


def negated(phrase: str, clause: str) -> bool:
    """Whether `clause` negates `phrase` (which it mentions), by the cues above."""
    words = WORD.findall(clause.lower())
    wanted = set(tokenize([phrase])[0])
    at = [i for i, stems in enumerate(tokenize(words)) if set(stems) & wanted]
    before, after = " ".join(words[: min(at)]), " ".join(words[max(at) + 1 : max(at) + 6])
    return bool(BEFORE.search(before) or AFTER.search(after))


def clauses_mentioning(phrase: str, text: str) -> list[str]:
    """The clauses of `text` that have every word of `phrase` (as the lexical index stems them)."""
    wanted = set(tokenize([phrase])[0])
    clauses = [c for s in split_sentences(text) for c in CLAUSES.split(s)]
    return [c for c, terms in zip(clauses, tokenize(clauses), strict=True) if wanted <= set(terms)]


def test_the_analysis_shows_no_negated_finding_as_present(
    real_service: Service,
    real_rows: list[dict[str, str]],
    browser,  # type: ignore[no-untyped-def]
) -> None:
    from selenium.webdriver.common.by import By

    texts = {row["patient_uid"]: row["patient"] for row in real_rows}
    browser.set_window_size(1280, 1000)
    ask(browser, real_service.url, QUERY, k=5)
    uids = [item.get_attribute("data-uid") for item in browser.find_elements(By.CSS_SELECTOR, "#cases > li")]
    analysis = browser.find_element(By.ID, "analysis-text").text
    assert "not written by" in analysis
    counted = counted_findings(analysis)

    for phrase, (present, _) in counted.items():
        for ref in present:  # shown as present: the case says so in a clause that negates nothing
            clauses = clauses_mentioning(phrase, texts[uids[ref - 1]])
            assert any(not negated(phrase, c) for c in clauses), (phrase, uids[ref - 1], len(clauses))

    # The clinician's case: returned cases that state the antibody negative, and the page says so of them.
    dsdna = "anti-double-stranded DNA antibodies"
    negative = [
        ref
        for ref, uid in enumerate(uids, start=1)
        if (clauses := clauses_mentioning(dsdna, texts[uid])) and all(negated(dsdna, c) for c in clauses)
    ]
    assert negative, "no returned case states the antibody negative: the query no longer tests the point"
    present, absent = counted[dsdna]
    assert not set(present) & set(negative) and set(negative) <= set(absent)
    assert "Diagnoses they share" in analysis or "no diagnosis in common" in analysis
    shot(browser, "analysis-negation-real")


def test_scores_read_as_shares_of_the_best_and_a_case_keeps_its_paragraphs(
    real_service: Service,
    real_rows: list[dict[str, str]],
    browser,  # type: ignore[no-untyped-def]
) -> None:
    """Issue 26, item 4: a band and a share of this search's best score, the raw score on hover; and the
    real summaries' paragraph breaks (a literal backslash-n in PMC-Patients) shown as line breaks."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    texts = {row["patient_uid"]: row["patient"] for row in real_rows}
    browser.set_window_size(1280, 1000)
    ask(browser, real_service.url, QUERY, k=5)
    items = browser.find_elements(By.CSS_SELECTOR, "#cases > li")
    shares = []
    for item in items:
        shown = item.find_element(By.CSS_SELECTOR, ".case-meta .relevance")
        said = re.fullmatch(r"(close|partial|distant) match \((\d+)% of the best\)", shown.text)
        assert said, shown.text
        assert re.match(
            r"Raw \w+ score -?\d+\.\d{3}; the best case of this search scores", shown.get_attribute("title")
        )
        assert "not a probability" in shown.get_attribute("title")
        shares.append(int(said.group(2)))
        assert "\\n" not in item.text
    assert shares[0] == 100 and shares == sorted(shares, reverse=True)

    uids = [item.get_attribute("data-uid") for item in items]
    ref, uid = next((i, u) for i, u in enumerate(uids) if "\\n" in texts[u])
    items[ref].find_element(By.CSS_SELECTOR, "button.open-case").click()
    view = items[ref].find_element(By.CLASS_NAME, "case-view")
    WebDriverWait(browser, 30).until(lambda d: view.find_elements(By.CLASS_NAME, "case-text"))
    whole = view.find_element(By.CLASS_NAME, "case-text").text
    paragraphs = [" ".join(p.split()) for p in texts[uid].split("\\n") if p.strip()]
    assert "\\n" not in whole and len(paragraphs) > 1
    assert [" ".join(line.split()) for line in whole.splitlines() if line.strip()] == paragraphs
