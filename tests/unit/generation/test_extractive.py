"""The extractive generator (issue 17, points 7 and 9; issue 26): an analysis of statements that cite the
cases, no passage repeated, and a follow-up answered with the sentences about what it asks."""

from __future__ import annotations

import re

from patientinsight.generation.extractive import ExtractiveGenerator
from patientinsight.generation.protocol import resolve_citations
from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.passages import best_passages

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
    diagnoses, ages, sexes, shared = lines[1:]
    assert diagnoses.startswith("Diagnoses they share") and "community-acquired pneumonia in 2 of 3 [1][2]" in diagnoses
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


def test_the_extractive_follow_up_quotes_the_sentences_about_what_it_asks_and_cites_them() -> None:
    found = cases()
    answer = ExtractiveGenerator().follow_up("Which of these were treated surgically or with drainage?", found)
    text = answer.text or ""
    lines = text.splitlines()
    assert lines[0].startswith("No language model is configured") and "quoted" in lines[0]
    assert "about surgery" in lines[0]
    assert lines[1:] == [
        "[2] “She underwent surgical drainage of an empyema.”",
        "No sentence of [1], [3] reports surgery.",
    ]
    assert "ceftriaxone" not in text  # "treated" with a drug is no answer about surgery (issue 26, item 3)
    assert {c["ref"] for c in answer.citations} == {1, 2, 3}
    drugs = ExtractiveGenerator().follow_up("Which medications were they given?", found).text or ""
    assert "[1] “He was treated with intravenous ceftriaxone and recovered.”" in drugs and "surgical" not in drugs
    words = ExtractiveGenerator().follow_up("Any consolidation on the chest radiograph?", found).text or ""
    assert "[1] “A chest radiograph showed a right lower lobe consolidation.”" in words
    unmatched = ExtractiveGenerator().follow_up("Any haemoptysis?", found).text or ""
    assert "No sentence of [1], [2], [3] shares a word with the question." in unmatched
