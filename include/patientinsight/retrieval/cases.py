"""Query -> similar cases with their matching passages, shared by the service and the command line.

Ranking is the retrievers' (patientinsight.retrieval.searcher, chosen by the `retriever` setting), so the
service ranks exactly as the DAG's evaluation does. `CaseIndex` adds what an answer shows: the
records' columns, loaded once, so a query never re-reads the parquet file.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from patientinsight.embedding.encoder import Embedder
from patientinsight.index.types import Filters, IndexReader
from patientinsight.records.ages import age_display
from patientinsight.records.synthetic import SYNTHETIC_TITLE
from patientinsight.retrieval.passages import passages_of, readable
from patientinsight.retrieval.searcher import Searcher
from patientinsight.settings import Settings

log = logging.getLogger(__name__)


PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
PMC_URL = "https://pmc.ncbi.nlm.nih.gov/articles/PMC{pmc}/"
_SHOWN_COLUMNS = ["uid", "pmid", "title", "text", "age_years", "sex"]
_PMC_UID = re.compile(r"(\d+)-\d+")  # PMC-Patients' uid: <PMC article number>-<patient in the article>


def article_url(pmid: str | None) -> str | None:
    return PUBMED_URL.format(pmid=pmid) if pmid else None


def pmc_url(uid: str) -> str | None:
    """The full text on PubMed Central, from the uid's PMC article number (None for other uids)."""
    found = _PMC_UID.fullmatch(uid)
    return PMC_URL.format(pmc=found.group(1)) if found else None


def is_synthetic(title: str | None) -> bool:
    """A record of the synthetic demo sample (records/synthetic.py): its text, PMID and PMC number are invented."""
    return bool(title) and SYNTHETIC_TITLE in str(title)


@dataclass
class Case:
    patient_uid: str
    pmid: str | None
    title: str | None
    age_years: float | None
    sex: str | None
    score: float | None = None
    passages: list[str] = field(default_factory=list)
    text: str = field(default="", repr=False)  # for prompts only: the API shows passages, not the whole text

    @property
    def article_url(self) -> str | None:
        return article_url(self.pmid)

    @property
    def pmc_url(self) -> str | None:
        return pmc_url(self.patient_uid)

    @property
    def age_display(self) -> str | None:
        return age_display(self.age_years)

    @property
    def synthetic(self) -> bool:
        return is_synthetic(self.title)

    def to_dict(self, with_text: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "patient_uid": self.patient_uid,
            "pmid": self.pmid,
            "title": self.title,
            "article_url": self.article_url,
            "pmc_url": self.pmc_url,
            "age_years": self.age_years,
            "age_display": self.age_display,
            "sex": self.sex,
            "synthetic": self.synthetic,
            "score": self.score,
            "passages": list(self.passages),
        }
        if with_text:
            out["text"] = readable(self.text)
        return out


def _clean(value: Any) -> Any:
    """NaN and pandas NA become None, so the JSON says null."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


def _synthetic_count(titles: pd.Series) -> int:
    return int(titles.astype("string").str.contains(SYNTHETIC_TITLE, regex=False).fillna(False).sum())


def _case(row: dict[str, Any]) -> Case:
    age = _clean(row["age_years"])
    pmid = _clean(row["pmid"])
    return Case(
        patient_uid=str(row["uid"]),
        pmid=str(pmid) if pmid is not None else None,
        title=_clean(row["title"]),
        age_years=float(age) if age is not None else None,
        sex=_clean(row["sex"]),
        text=str(_clean(row["text"]) or ""),
    )


class CaseIndex:
    """One index version, ready to answer: the configured retriever over it, and the records by uid.

    Everything a query needs is loaded here (the lexical index too), so the first query after a
    switch is as fast as any other.
    """

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher
        self.reader = reader = searcher.reader
        self.version = reader.version
        self.retriever = self.searcher.config.retriever
        if self.retriever != "dense":
            try:
                _ = self.searcher.lexical
            except FileNotFoundError:  # a version built before the lexical index existed
                log.warning(
                    "index version %s has no lexical index: %s falls back to dense", self.version, self.retriever
                )
                self.retriever = "dense"
        # The records' texts stay on disk (memory-mapped by the reader): a case reads its own pages only.
        # How many records come from the synthetic demo sample: the page says so while they are served.
        self.synthetic_count = _synthetic_count(reader.frame(["title"])["title"])

    @classmethod
    def for_settings(cls, reader: IndexReader, embedder: Embedder, settings: Settings) -> CaseIndex:
        """The retriever and its knobs as configured, built as the gate builds its searcher: the service,
        the command line and the gate's evaluation rank alike."""
        return cls(Searcher.for_settings(reader, embedder, settings))

    def count(self) -> int:
        return self.reader.count()

    def case(self, uid: str) -> Case | None:
        found = self.cases([uid])
        return found[0] if found else None

    def cases(self, uids: list[str]) -> list[Case]:
        """The cases of these uids that the version holds, in the order asked."""
        held = [u for u in uids if len(self.reader.positions([u]))]
        frame = self.reader.records(held, _SHOWN_COLUMNS)  # not the similar-patient lists: a third of the time
        return [_case(row) for row in frame.to_dict("records")]

    def search(self, text: str, k: int, filters: Filters | None = None, exclude: Collection[str] = ()) -> list[Case]:
        """The k most similar cases, none of them one of the `exclude` uids (hidden from every stage)."""
        hits = self.searcher.search(text, k, filters, retriever=self.retriever, exclude=exclude)
        cases = self.cases([hit.uid for hit in hits])
        for case, hit in zip(cases, hits, strict=True):
            case.score = round(float(hit.score), 6)
        return cases


def retrieve(
    index: CaseIndex,
    text: str,
    k: int,
    filters: Filters | None = None,
    passages_per_case: int = 3,
    exclude: Collection[str] = (),
) -> tuple[list[Case], dict[str, float]]:
    """The k most similar cases with their best-matching sentences, and the search time in ms
    (the query's encoding included, for the retrievers that use it)."""
    started = time.perf_counter()
    cases = index.search(text, k, filters, exclude)
    for case, passages in zip(cases, passages_of(text, [case.text for case in cases], passages_per_case), strict=True):
        case.passages = passages
    return cases, {"search": (time.perf_counter() - started) * 1000}
