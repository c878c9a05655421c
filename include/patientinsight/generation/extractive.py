"""The generator without a language model (the offline default, and every generator's fallback): an
analysis counts what the cases have in common (commonality.py); a follow-up is answered with the cases'
best-matching sentences, quoted and cited."""

from __future__ import annotations

from patientinsight.generation.commonality import NO_MODEL, common_ground
from patientinsight.generation.protocol import Analysis, resolve_citations
from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.passages import scored_sentences

FOLLOW_UP_SENTENCES = 2  # per case, in the extractive answer
# Words of a question that ask rather than say what to look for.
_QUESTION_TERMS = frozenset({"which", "were", "was", "who", "what", "how", "mani", "ani", "did", "doe", "case"})


class ExtractiveGenerator:
    """No language model: what the cases have in common, counted and cited (no passage repeated); a
    follow-up is answered with the cases' sentences that best match the question, quoted and cited."""

    name = "extractive"

    def generate(self, query: str, cases: list[Case]) -> Analysis:
        text = common_ground(query, cases)
        return Analysis(self.name, text=text, citations=resolve_citations(text, cases))

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        lines = [
            f"{NO_MODEL}, so this answer is not written by one: below are the sentences of the "
            f"{len(cases)} cases that best match the words of the question, quoted as they are."
        ]
        unmatched = []
        for ref, case in enumerate(cases, start=1):
            best = [
                sentence
                for overlap, _, sentence in scored_sentences(question, case.text, _QUESTION_TERMS)
                if overlap > 0
            ][:FOLLOW_UP_SENTENCES]
            if best:
                lines.append(f"[{ref}] " + " … ".join(f"“{sentence}”" for sentence in best))
            else:
                unmatched.append(ref)
        if unmatched:
            refs = ", ".join(f"[{n}]" for n in unmatched)
            lines.append(f"No sentence of {refs} shares a word with the question.")
        text = "\n".join(lines)
        return Analysis(self.name, text=text, citations=resolve_citations(text, cases))
