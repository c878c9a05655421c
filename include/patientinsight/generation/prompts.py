"""What a language model is told: the system prompts of an analysis and of a follow-up, and the numbered
cases of the user prompt (the numbers are what its citations refer to)."""

from __future__ import annotations

from patientinsight.records.ages import age_display
from patientinsight.retrieval.cases import Case

SYSTEM_PROMPT = (
    "You are a clinical decision-support assistant for physicians. You receive a description of a "
    "patient and numbered published case reports of similar patients. Write a concise analysis of the "
    "similar cases: the diagnoses they point to, the treatments that were given and the outcomes that "
    "were reported. Cite the cases by their number in square brackets, such as [1] or [2], after each "
    "statement they support. Use only the numbered cases; say so when they do not answer something. "
    "This supports, and does not replace, clinical judgement."
)
FOLLOW_UP_PROMPT = (
    "You are a clinical decision-support assistant for physicians. You receive numbered published case "
    "reports and a physician's question about them. Answer the question from these cases only, case by case "
    "where it helps. Cite the cases by their number in square brackets, such as [1] or [2], after each "
    "statement they support. When the cases do not say, say so; do not use outside knowledge. This supports, "
    "and does not replace, clinical judgement."
)
CASE_CHARS = 1500  # of each case's text in a prompt: enough for the treatment and outcome of most reports


def _describe(case: Case) -> str:
    age = age_display(case.age_years) or "age unknown"
    return f"{case.title or 'Untitled'} (PMID {case.pmid or 'unknown'}; {age}; sex {case.sex or 'unknown'})"


def build_user_prompt(query: str, cases: list[Case]) -> str:
    blocks = [f"[{i}] {_describe(c)}\n{c.text[:CASE_CHARS]}" for i, c in enumerate(cases, start=1)]
    return "Patient description:\n" + query.strip() + "\n\nSimilar published cases:\n\n" + "\n\n".join(blocks)


def build_follow_up_prompt(question: str, cases: list[Case]) -> str:
    blocks = [f"[{i}] {_describe(c)}\n{c.text[:CASE_CHARS]}" for i, c in enumerate(cases, start=1)]
    return "Question about these cases:\n" + question.strip() + "\n\nThe cases:\n\n" + "\n\n".join(blocks)
