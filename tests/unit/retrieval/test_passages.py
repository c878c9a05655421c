"""The passages shown for a case: the sentences that match the query best."""

from __future__ import annotations

from patientinsight.retrieval.passages import best_passages, passages_of, scored_sentences


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


def test_passages_of_many_texts_are_each_texts_own() -> None:
    """One tokenizer call for every hit gives each the sentences its own call would."""
    query = "fever with a productive cough and consolidation"
    texts = [
        "He had a fever. A productive cough followed. Imaging showed consolidation. He recovered.",
        "No cough was reported. She had a rash on the arms. The fever settled.",
        "Pain in the right iliac fossa. An inflamed appendix was removed.",
        "",
    ]
    alone = [[sentence for _, _, sentence in scored_sentences(query, text)[:2]] for text in texts]
    assert passages_of(query, texts, 2) == alone
    assert alone[0] == ["A productive cough followed.", "He had a fever."] and alone[3] == []
