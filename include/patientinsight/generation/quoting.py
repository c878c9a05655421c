"""Which sentences of a case answer a follow-up question, for the extractive answer that quotes them.

A question that asks about an intent (intents.py: surgery, medications, outcomes, treatment) is answered
only by sentences that assert one of that intent's cues: not by "surgery was declined" for "which were
operated on?", nor by "serum insulin was normal" for "which medications?" (negation.py). Among those, the
sentence sharing the most of the question's other words comes first, then the one densest in cues. A
question without an intent is answered, as before, by the sentences that share the most of its words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from patientinsight.generation.intents import Intent, intent_words
from patientinsight.generation.negation import Status, pieces
from patientinsight.index.lexical import tokenize
from patientinsight.retrieval.passages import scored_sentences, split_sentences

# Stemmed words of a question that ask rather than say what to look for.
QUESTION_TERMS = frozenset(
    {"which", "were", "was", "who", "what", "how", "mani", "ani", "did", "doe", "case", "patient", "get", "undergo"}
)

MIN_WORDS = 4  # shorter "sentences" are the headings of a report ("Operation", "Postoperative course")


def matching_sentences(question: str, text: str, n: int) -> list[str]:
    """Up to n sentences of `text` that share words of the question, best first (no intent asked)."""
    return [sentence for overlap, _, sentence in scored_sentences(question, text, QUESTION_TERMS) if overlap > 0][:n]


def intent_sentences(question: str, text: str, n: int, intents: Sequence[Intent]) -> list[str]:
    """Up to n sentences of `text` about one of `intents`, best first; none when no sentence asserts a cue."""
    sentences = split_sentences(text)
    asked = set(tokenize([question])[0]) - QUESTION_TERMS - _words(intent_words(question, intents))
    ranked = []
    for position, (sentence, terms) in enumerate(zip(sentences, tokenize(sentences), strict=True)):
        if len(sentence.split()) < MIN_WORDS:
            continue
        # asserted pieces joined with a bar, so that no cue is read across the edge of two pieces
        asserted = " | ".join(p.text for p in pieces(sentence) if p.status is Status.ASSERTED)
        cues = sum(intent.cues_in(asserted) for intent in intents)
        if not cues:
            continue
        hints = sum(intent.hints_in(asserted) for intent in intents)
        density = (cues + hints) / math.sqrt(len(terms) + 1.0)
        ranked.append((-len(asked & set(terms)), -density, position, sentence))
    ranked.sort()
    return [sentence for *_, sentence in ranked[:n]]


def _words(phrases: list[str]) -> set[str]:
    return {term for terms in tokenize(phrases) for term in terms} if phrases else set()
