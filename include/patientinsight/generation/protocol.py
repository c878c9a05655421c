"""What every generator is and returns: the Generator Protocol, the Analysis, and the citations of its
text resolved to the cases' uids."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from patientinsight.retrieval.cases import Case

_CITATION = re.compile(r"\[(\d+(?:\s*[,;-]\s*\d+)*)\]")


@dataclass
class Analysis:
    generator: str
    text: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    error: str | None = None
    usage: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "model": self.model,
            "text": self.text,
            "citations": self.citations,
            "error": self.error,
            "usage": self.usage,
        }


class Generator(Protocol):
    name: str

    def generate(self, query: str, cases: list[Case]) -> Analysis: ...

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        """An answer to a question about `cases` (the cases of an earlier answer), from them only."""
        ...


def resolve_citations(text: str, cases: list[Case]) -> list[dict[str, Any]]:
    """[1], [2, 3] and [1-2] in `text`, in order of first use, resolved to the uids of those positions."""
    seen: list[int] = []
    for group in _CITATION.findall(text):
        numbers: list[int] = []
        for part in re.split(r"\s*[,;]\s*", group):
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                numbers.extend(range(low, min(high, len(cases)) + 1))
            else:
                numbers.append(int(part))
        seen.extend(n for n in numbers if 1 <= n <= len(cases) and n not in seen)
    return [{"ref": n, "patient_uid": cases[n - 1].patient_uid} for n in seen]
