"""The passages shown for a case: the sentences that match the query best."""

from __future__ import annotations

from patientinsight.retrieval.passages import best_passages


def test_passages_are_the_sentences_that_match_best() -> None:
    text = (
        "A 60-year-old man was admitted. He had crushing chest pain radiating to the left arm. "
        "His mother had diabetes. ST-segment elevation was seen in the inferior leads."
    )
    passages = best_passages("chest pain to the left arm, ST elevation", text, 2)
    assert passages == [
        "He had crushing chest pain radiating to the left arm.",
        "ST-segment elevation was seen in the inferior leads.",
    ]
