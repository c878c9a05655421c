"""What a follow-up question asks about ("treated surgically" asks about operations), and which sentences of
a case are about that: the words of a question that name an intent, and the cues of a sentence that make it
an answer. Matching the question's words alone quotes "treated with antibiotics" for "treated surgically";
a sentence without one of the intent's cues is never an answer to it.

Each intent has cues, of which a sentence needs one, and hints, which only rank: "underwent" is a hint for
surgery, since on the real records most sentences with it are about a scan, a puncture or chemotherapy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_FLAGS = re.IGNORECASE | re.VERBOSE

# Names of operations: -ectomy, -otomy, -ostomy, -plasty, -pexy, -rrhaphy, and the words around them. Not
# "non-surgical", phlebotomy (a blood draw), graft-versus-host disease, or DNA repair.
_SURGERY = r"""
    (?<!non-)(?<!non\s)\b(?:surg(?:ery|eries|ical|ically|eon|eons)|operat(?:ed|ion|ions|ive|ively|ing\s+room))\b
    | \b(?:post|pre|intra|peri)-?operative(?:ly)?\b | \bre-?operat\w*
    | \b(?:resect(?:ed|ion|ions)|excis(?:ed|ion|ions|ional)|amputat(?:ed|ion)|debrided|debridement|enucleat(?:ed|ion)
        |ligat(?:ed|ion)|anastomos[ie]s|marsupiali[sz]ation|laparoscop\w*|thoracoscop\w*|arthroscop\w*|craniectom\w*
        |grafting|grafted|bypass|flap|ORIF)\b
    | \b\w+ectom(?:y|ies|ized)\b | \b(?!phlebotom|dichotom)\w+otom(?:y|ies)\b | \b\w+ostom(?:y|ies)\b
    | \b\w+plast(?:y|ies)\b | \b\w+pex(?:y|ies)\b | \b\w+rrhaph(?:y|ies)\b
    | \b(?:internal|external|surgical|screw|plate)\s+fixation\b
    | \b(?:valve|valvular|hip|knee|joint|shoulder|aortic|mitral|root)\s+replacement\b
    | (?<!DNA\s)\brepair(?:ed|s)?\b
    | \b(?:kidney|renal|liver|hepatic|heart|cardiac|lung|pancrea\w*|intestinal|corneal|orthotopic)\s+(?:\w+\s+)?
        transplant\w*
"""
# Drugs by class, by the stems and endings of their names, and by doses and routes.
_MEDICATION = r"""
    \b(?:medications?|medicines?|drugs?|antibiotics?|antibiotic\s+therapy|antimicrobials?|antivirals?|antifungals?
        |steroids?|corticosteroids?|glucocorticoids?|chemotherapy|immunotherapy|immunosuppress\w*|analgesi\w*
        |anticoagula\w*|antiplatelet\w*|diuretics?|vasopressors?|inotropes?|antiepileptics?|anticonvulsants?
        |antihypertensives?|antipsychotics?|antidepressants?|insulin|aspirin|warfarin|metformin|morphine|opioids?
        |paracetamol|acetaminophen|ibuprofen|methotrexate|cyclophosphamide|immunoglobulins?|IVIG|heparin
        |infusions?|injections?|tablets?|capsules?)\b
    | \b\d+(?:\.\d+)?\s*(?:mg|mcg|µg|μg|g|units?|IU)(?:/(?:kg|day|d|h|hr|m2))?\b(?!/)  # a dose, not mg/dL
    | \b\w+(?:mab|nib|cillin|mycin|micin|floxacin|cycline|azole|vir|olol|pril|sartan|statin|parin|xaban|gatran
        |platin|taxel|rubicin|sone|solone|olone|prazole|dipine|zepam|zolam|triptan|afil|tidine|semide|thiazide
        |limus|quine|trexate|phosphamide|thioprine|penem)\b
    | \bcef\w+
"""
_TREATMENT_VERBS = r"""
    \b(?:intravenous(?:ly)?|orally|subcutaneous(?:ly)?|treated|treatment|therapy|therapies|managed|management|given|received|receiving|administered|administration
        |prescribed|started\s+on|initiated|commenced|underwent|undergone|radiotherapy|radiation|dialysis
        |hemodialysis|haemodialysis|transfusions?|plasmapheresis|plasma\s+exchange)\b
"""
_OUTCOME = r"""
    \b(?:discharged|died|death|deceased|expired|passed\s+away|succumbed|recovered|recovery|remission|resolved
        |resolution|relapsed?|recurrence|recurred|alive|survived|survival|fatal|uneventful|asymptomatic
        |improved|improvement|follow-?up|followed\s+up|prognosis|outcome)\b
    | \b(?:at|on|after|upon|before|since)\s+(?:hospital\s+)?discharge\b | \bdischarge\s+(?:home|from)\b
"""


@dataclass(frozen=True)
class Intent:
    topic: str  # what its answers are about, as a sentence of the answer says it
    asks: re.Pattern[str]  # words of a question that ask for it
    cues: re.Pattern[str]  # a sentence needs one to answer it
    hints: re.Pattern[str] | None = None  # rank its answers, answer nothing alone

    def cues_in(self, text: str) -> int:
        return len(self.cues.findall(text))

    def hints_in(self, text: str) -> int:
        return len(self.hints.findall(text)) if self.hints else 0


SURGERY = Intent(
    "surgery",
    re.compile(
        r"\b(?:surg\w*|operat\w*|resect\w*|excis\w*|\w+ectom(?:y|ies)|\w+otom(?:y|ies)|\w+plast(?:y|ies))", re.I
    ),
    re.compile(_SURGERY, _FLAGS),
    re.compile(r"\b(?:underwent|undergone|performed|operated\s+on)\b", re.I),
)
MEDICATION = Intent(
    "medications",
    re.compile(
        r"\b(?:medications?|medicines?|drugs?|pharmaco\w*|prescri\w*|medically|dos(?:e|es|age|ing)|regimens?)\b", re.I
    ),
    re.compile(_MEDICATION, _FLAGS),
    re.compile(_TREATMENT_VERBS, _FLAGS),
)
OUTCOME = Intent(
    "outcomes",
    re.compile(
        r"\b(?:outcomes?|prognos\w*|surviv\w*|die[ds]?|dead|deaths?|mortality|recover\w*|discharg\w*|follow[- ]?ups?"
        r"|followed\s+up|fared|resolv\w*|remission|relaps\w*|recurr\w*|improv\w*|alive|fatal)\b",
        re.I,
    ),
    re.compile(_OUTCOME, _FLAGS),
    re.compile(r"\b(?:later|months?|years?|weeks?)\b", re.I),
)
# Asked for only when no narrower intent is ("how were they treated?"): any operation, drug or therapy.
TREATMENT = Intent(
    "treatment",
    re.compile(r"\b(?:treat\w*|therap\w*|manag\w*)\b", re.I),
    re.compile(f"{_SURGERY} | {_MEDICATION} | {_TREATMENT_VERBS}", _FLAGS),
)
_NARROW = (SURGERY, MEDICATION, OUTCOME)


def question_intents(question: str) -> list[Intent]:
    """The intents a question asks about, narrow ones first; none when it only names what to look for."""
    narrow = [intent for intent in _NARROW if intent.asks.search(question)]
    if narrow:
        return narrow
    return [TREATMENT] if TREATMENT.asks.search(question) else []


def intent_words(question: str, intents: Sequence[Intent]) -> list[str]:
    """The words of the question that only say which intent it asks about ("surgically", "treated"): they
    name no finding to look for in the answers."""
    words = [m.group(0) for intent in intents for m in intent.asks.finditer(question)]
    return [*words, *(m.group(0) for m in TREATMENT.asks.finditer(question))]
