"""Query -> similar cases with their matching passages, shared by the service and the command line.

Ranking is the retrievers' (patientinsight.retrieval.searcher, chosen by the `retriever` setting), so the
service ranks exactly as the DAG's evaluation does. `CaseIndex` adds what an answer shows: the
records' columns, loaded once, so a query never re-reads the parquet file.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from patientinsight.embedding.encoder import Embedder
from patientinsight.index.types import Filters, IndexReader
from patientinsight.retrieval.passages import best_passages
from patientinsight.retrieval.searcher import Searcher
from patientinsight.settings import Settings

log = logging.getLogger(__name__)


PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
_SHOWN_COLUMNS = ["uid", "pmid", "title", "text", "age_years", "sex"]


def article_url(pmid: str | None) -> str | None:
    return PUBMED_URL.format(pmid=pmid) if pmid else None


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

    def to_dict(self, with_text: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "patient_uid": self.patient_uid,
            "pmid": self.pmid,
            "title": self.title,
            "article_url": self.article_url,
            "age_years": self.age_years,
            "sex": self.sex,
            "score": self.score,
            "passages": list(self.passages),
        }
        if with_text:
            out["text"] = self.text
        return out


def _clean(value: Any) -> Any:
    """NaN and pandas NA become None, so the JSON says null."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


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
        # An Arrow table, not a frame: the same bytes without a Python object per value (at 250,000
        # records about 130 MB less), rows taken by the reader's positions.
        self._records = pq.read_table(reader.path / "records.parquet", columns=_SHOWN_COLUMNS)

    @classmethod
    def for_settings(cls, reader: IndexReader, embedder: Embedder, settings: Settings) -> CaseIndex:
        """The retriever and its knobs as configured, built as the gate builds its searcher: the service,
        the command line and the gate's evaluation rank alike."""
        return cls(Searcher.for_settings(reader, embedder, settings))

    def count(self) -> int:
        return self.reader.count()

    def case(self, uid: str) -> Case | None:
        found = self.reader.positions([uid])
        if len(found) == 0:
            return None
        row = self._records.slice(int(found[0]), 1).to_pylist()[0]
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

    def search(self, text: str, k: int, filters: Filters | None = None, exclude: Collection[str] = ()) -> list[Case]:
        """The k most similar cases, none of them one of the `exclude` uids (hidden from every stage)."""
        cases = []
        for hit in self.searcher.search(text, k, filters, retriever=self.retriever, exclude=exclude):
            case = self.case(hit.uid)
            if case is not None:
                case.score = round(float(hit.score), 6)
                cases.append(case)
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
    for case in cases:
        case.passages = best_passages(text, case.text, passages_per_case)
    return cases, {"search": (time.perf_counter() - started) * 1000}
