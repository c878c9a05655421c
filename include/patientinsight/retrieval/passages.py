"""Sentences of a case report: split, the first few (a short query), and those that best match a query."""

from __future__ import annotations

import math
import re

from patientinsight.index.lexical import tokenize

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
# PMC-Patients writes a summary's paragraph breaks as a literal backslash-n (739 of the 1,000 sample
# summaries, in its CSV and its JSON alike). The stored text keeps it as the source has it (its content hash,
# its tokens); what a person reads gets real line breaks.
PARAGRAPH_BREAK = re.compile(r"\\n|\n")


def readable(text: str) -> str:
    """A summary as a person reads it: its paragraph breaks as line breaks."""
    return text.replace("\\n", "\n") if "\\n" in text else text


def split_sentences(text: str) -> list[str]:
    """Sentences of a summary (a full stop, ! or ? followed by a capital, digit or bracket), each
    paragraph's apart: no sentence runs over a paragraph break."""
    return [
        s.strip()
        for paragraph in PARAGRAPH_BREAK.split(text.strip())
        for s in _SENTENCE_END.split(paragraph.strip())
        if s.strip()
    ]


def first_sentences(text: str, n: int = 2) -> str:
    """The opening of a summary, the way a clinician would describe the patient. It splits as the
    evaluation's short queries always have (across a paragraph break too), so their numbers stay comparable."""
    return " ".join(_SENTENCE_END.split(text.strip(), maxsplit=n)[:n])


# Stemmed words that say nothing about this patient in a case report: they would win passage scores.
_FILLER = frozenset({"patient", "year", "old", "present", "histori", "admit", "day"})


def _terms(texts: list[str]) -> list[set[str]]:
    # The lexical index's own tokens (stop words out, Snowball stems), so passages match as ranking does;
    # one call for many texts (each call costs a fixed ~0.3 ms).
    return [set(tokens) - _FILLER for tokens in tokenize(texts)]


def scored_sentences(query: str, text: str, ignore: frozenset[str] = frozenset()) -> list[tuple[int, float, str]]:
    """Every sentence of `text` as (query terms it shares, score, sentence), best first (ties: earlier
    first). The score divides the overlap by the root of the sentence's length, so that a short sentence
    on the point beats a long one that mentions it in passing. `ignore`: query terms that do not count."""
    sentences = split_sentences(text)
    wanted, *terms = _terms([query, *sentences])
    return _ranked(wanted - ignore, sentences, terms)


def _ranked(wanted: set[str], sentences: list[str], terms: list[set[str]]) -> list[tuple[int, float, str]]:
    scored = []
    for position, (sentence, words) in enumerate(zip(sentences, terms, strict=True)):
        overlap = len(wanted & words)
        scored.append((-(overlap / math.sqrt(len(words) + 1.0)), position, overlap, sentence))
    scored.sort()
    return [(overlap, -score, sentence) for score, _, overlap, sentence in scored]


def best_passages(query: str, text: str, n: int) -> list[str]:
    """The n sentences of `text` that share the most query terms, best first (ties: earlier first).

    Lexical on purpose: embedding every sentence of every hit would cost more than the whole search
    (tens of ms per query on two cores), while the case's rank already comes from the retriever.
    """
    return passages_of(query, [text], n)[0]


def passages_of(query: str, texts: list[str], n: int) -> list[list[str]]:
    """`best_passages` of each text, the query and every sentence tokenized in one call (each call costs
    a fixed ~0.3 ms)."""
    split = [split_sentences(text) for text in texts]
    wanted, *terms = _terms([query, *(sentence for sentences in split for sentence in sentences)])
    out, start = [], 0
    for sentences in split:
        ranked = _ranked(wanted, sentences, terms[start : start + len(sentences)])
        out.append([sentence for _, _, sentence in ranked[:n]])
        start += len(sentences)
    return out
