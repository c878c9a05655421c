"""Whether a sentence asserts what it mentions: NegEx-style cues (Chapman et al., 2001) mark the words they
govern as negated ("no fever", "anti-dsDNA antibodies were negative") or uncertain ("screened for lupus",
"a possible abscess"); everything else is asserted.

A cue before its words governs them up to the end of the clause (a full stop, semicolon, colon or
paragraph break) or up to a termination cue ("but", "however", "which", "positive"...); a cue after its
words ("were negative", "was ruled out") governs back to the start of the clause or the last termination
cue. Commas do not end a scope, since a negation usually covers a list ("negative for ANA, anti-dsDNA
and ANCA"); the price is an occasional word counted as negated that was not, the safer mistake for a
clinician reading counts. No clinical NLP library is installed (negspacy and medspaCy need spaCy and a
language model), so the cue lists below are this module's own, after NegEx's and pyConText's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from patientinsight.index.lexical import tokenize
from patientinsight.retrieval.passages import PARAGRAPH_BREAK


class Status(Enum):
    ASSERTED = "asserted"
    NEGATED = "negated"
    UNCERTAIN = "uncertain"  # mentioned as tested for, suspected or possible, or not examined


# Words that look like cues and are not: masked before cues are looked for (NegEx's pseudo-triggers).
_PSEUDO = r"""
    no\s+(?:significant\s+|further\s+|interval\s+)?(?:change|increase|improvement|decrease|longer\s+than)
    | not\s+only | not\s+necessarily | without\s+(?:difficulty|delay|complications?\s+of\s+the\s+procedure)
    | gram[-\s]negative | triple[-\s]negative | no\s+\d | non-?negative
"""
# "X could not be ruled out" says X is possible: uncertain, governing back.
_UNCERTAIN_AFTER = r"""
    (?:cannot|can\s+not|could\s+not|not)\s+be\s+(?:ruled\s+out|excluded)
    | (?:was|were|is|are)\s+(?:\w+\s+)?(?:suspected|considered|questioned|possible|not\s+(?:checked|performed|done|
        measured|tested|assessed|evaluated|available|obtained))
"""
_NEGATED_AFTER = r"""
    (?:was|were|is|are|been|be|remained)\s+(?:\w+\s+)?(?:negative(?!\s+for)|absent|unremarkable|normal
        |within\s+normal\s+(?:limits|ranges?)|excluded|ruled\s+out|
        not\s+(?:detected|found|seen|observed|present|identified|noted|visuali[sz]ed|demonstrated|evident|appreciated|
        elicited|palpable|recorded|reported|confirmed)|declined|refused|deferred|withheld|cancell?ed|abandoned)
"""
# "double stranded DNA negative, C3 normal": a bare "negative" governs back to the comma before it only.
_NEGATED_JUST_AFTER = r"negative(?!\s+for)"
_UNCERTAIN_BEFORE = r"""
    screen(?:ed|ing)?\s+for | evaluat(?:e|ed|ion)\s+for | test(?:ed|ing)?\s+for | work-?up\s+for
    | check(?:ed|ing)?\s+for | (?:to\s+)?rule\s+out | r/o | suspect(?:ed|s)? | suspicion\s+(?:of|for) | possibl[ey]
    | probabl[ey] | questionable | whether | differential\s+diagnos[ie]s | concern\s+for
"""
_NEGATED_BEFORE = r"""
    negative\s+for | no\s+(?:evidence|signs?|history)\s+of | free\s+of | absence\s+of | lack\s+of
    | fail(?:ed|s)?\s+to\s+(?:show|reveal|demonstrate|detect|identify)
    | ruled?\s+out | ruling\s+out | excluded | den(?:y|ies|ied|ying) | refus(?:ed|es|al\s+of) | declined
    | absent | without | none | neither | nor | not | no
"""
# What ends a scope before the clause does.
_TERMINATION = r"""
    but | however | although | though | except | apart\s+from | aside\s+from | whereas | yet | nevertheless
    | while | which | who | whom | whose | positive | reported | complain(?:ed|s|ing) | develop(?:ed|s|ing) | presented
    | showed | revealed | he | she | they | his | her | there
"""
_CUES = re.compile(
    "|".join(
        rf"(?P<{name}>\b(?:{pattern}))\b"
        for name, pattern in (
            ("pseudo", _PSEUDO),
            ("uncertain_after", _UNCERTAIN_AFTER),
            ("negated_after", _NEGATED_AFTER),
            ("negated_just_after", _NEGATED_JUST_AFTER),
            ("uncertain_before", _UNCERTAIN_BEFORE),
            ("negated_before", _NEGATED_BEFORE),
            ("termination", _TERMINATION),
        )
    ),
    re.IGNORECASE | re.VERBOSE,
)
# Where a clause ends: a full stop, semicolon, colon, question or exclamation mark; and a paragraph break
# (retrieval.passages).
_CLAUSES = re.compile(rf"[.;:?!](?=\s|$)|{PARAGRAPH_BREAK.pattern}")


@dataclass(frozen=True)
class Piece:
    text: str
    status: Status


def pieces(sentence: str) -> list[Piece]:
    """The sentence cut into consecutive pieces, each asserted, negated or uncertain (cue words belong to
    the piece they govern, so that "negative" or "denied" never counts as a finding)."""
    marks = [Status.ASSERTED] * len(sentence)
    start = 0
    for boundary in [*_CLAUSES.finditer(sentence), None]:
        end = boundary.start() if boundary else len(sentence)
        _mark_clause(sentence, start, end, marks)
        start = boundary.end() if boundary else end
    out: list[Piece] = []
    begin = 0
    for i in range(1, len(sentence) + 1):
        if i == len(sentence) or marks[i] is not marks[begin]:
            out.append(Piece(sentence[begin:i], marks[begin]))
            begin = i
    return [p for p in out if p.text.strip()]


def _mark_clause(sentence: str, start: int, end: int, marks: list[Status]) -> None:
    cues = [m for m in _CUES.finditer(sentence, start, end) if m.lastgroup != "pseudo"]
    stops = [start] + [m.start() for m in cues if m.lastgroup == "termination"] + [end]
    for cue in cues:
        kind = cue.lastgroup or ""
        if kind == "termination":
            continue
        status = Status.NEGATED if kind.startswith("negated") else Status.UNCERTAIN
        if kind == "negated_just_after":
            comma = sentence.rfind(",", start, cue.start())
            first, last = max([s for s in stops if s <= cue.start()] + [comma + 1]), cue.end()
        elif kind.endswith("after"):
            first, last = max(s for s in stops if s <= cue.start()), cue.end()
        else:
            first, last = cue.start(), min(s for s in stops if s > cue.start())
        for i in range(first, last):
            # a negation outranks an uncertainty over the same words ("no possible ...")
            if marks[i] is not Status.NEGATED:
                marks[i] = status


@dataclass(frozen=True)
class SentenceTerms:
    """A sentence's stemmed terms (the lexical index's), by what the sentence says of them."""

    text: str
    asserted: frozenset[str]
    negated: frozenset[str]
    uncertain: frozenset[str]

    def status_of(self, terms: frozenset[str]) -> Status | None:
        """What this sentence says of a finding made of `terms`: asserted when every term is asserted here,
        negated when all are mentioned and one is negated, uncertain otherwise; None when it misses one."""
        if terms <= self.asserted:
            return Status.ASSERTED
        if not terms <= self.asserted | self.negated | self.uncertain:
            return None
        return Status.NEGATED if terms & (self.negated - self.asserted) else Status.UNCERTAIN


def sentence_terms(sentences: Sequence[str]) -> list[SentenceTerms]:
    """Each sentence's terms by status, tokenized in one call (each call has a fixed cost)."""
    cut = [pieces(s) for s in sentences]
    tokens = iter(tokenize([p.text for ps in cut for p in ps]))
    out = []
    for sentence, ps in zip(sentences, cut, strict=True):
        by_status: dict[Status, set[str]] = {status: set() for status in Status}
        for piece in ps:
            by_status[piece.status].update(next(tokens))
        out.append(
            SentenceTerms(
                sentence,
                frozenset(by_status[Status.ASSERTED]),
                frozenset(by_status[Status.NEGATED]),
                frozenset(by_status[Status.UNCERTAIN]),
            )
        )
    return out


def case_status(terms: frozenset[str], sentences: Sequence[SentenceTerms]) -> Status | None:
    """What a case says of a finding over all its sentences: asserted if one sentence asserts it (a case
    may say "no fever on admission" and later "she developed a fever"), else negated if one negates it,
    else uncertain if one mentions it; None if none mentions it."""
    found = {s.status_of(terms) for s in sentences}
    for status in (Status.ASSERTED, Status.NEGATED, Status.UNCERTAIN):
        if status in found:
            return status
    return None
