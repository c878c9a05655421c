"""The generator without a language model (the offline default, and every generator's fallback): an
analysis counts what the cases have in common (commonality.py); a follow-up is answered with the cases'
sentences that answer it (quoting.py), quoted and cited."""

from __future__ import annotations

from patientinsight.generation.commonality import NO_MODEL, common_ground
from patientinsight.generation.intents import question_intents
from patientinsight.generation.protocol import Analysis, resolve_citations
from patientinsight.generation.quoting import intent_sentences, matching_sentences
from patientinsight.retrieval.cases import Case

FOLLOW_UP_SENTENCES = 2  # per case, in the extractive answer


class ExtractiveGenerator:
    """No language model: what the cases have in common, counted and cited (no passage repeated); a
    follow-up is answered with the cases' sentences about what the question asks (its surgery, medications,
    outcomes...) or, failing such an intent, those that share its words, quoted and cited."""

    name = "extractive"

    def generate(self, query: str, cases: list[Case]) -> Analysis:
        text = common_ground(query, cases)
        return Analysis(self.name, text=text, citations=resolve_citations(text, cases))

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        intents = question_intents(question)
        topics = " or ".join(intent.topic for intent in intents)
        chosen = (
            f"about {topics}, which the question asks about" if intents else "that best match the words of the question"
        )
        lines = [
            f"{NO_MODEL}, so this answer is not written by one: below are the sentences of the {len(cases)} "
            f"cases {chosen}, quoted as they are."
        ]
        unmatched = []
        for ref, case in enumerate(cases, start=1):
            if intents:
                best = intent_sentences(question, case.text, FOLLOW_UP_SENTENCES, intents)
            else:
                best = matching_sentences(question, case.text, FOLLOW_UP_SENTENCES)
            if best:
                lines.append(f"[{ref}] " + " … ".join(f"“{sentence}”" for sentence in best))
            else:
                unmatched.append(ref)
        if unmatched:
            refs = ", ".join(f"[{n}]" for n in unmatched)
            missing = f"reports {topics}" if intents else "shares a word with the question"
            lines.append(f"No sentence of {refs} {missing}.")
        text = "\n".join(lines)
        return Analysis(self.name, text=text, citations=resolve_citations(text, cases))
