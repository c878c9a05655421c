"""Retrievers over one index version: dense (the embedding), lexical (BM25), lexical with RM3
feedback, a hybrid of dense and lexical scores over the whole corpus, and hybrid_rerank (the BM25
candidates rescored with the dense vectors). Each scores every record, and the reader's `top` takes
the k best, so filters work the same in all of them.

Leave-one-out: every retriever takes the uids to exclude and hides them (and the records the filters
rule out) before any step reads the corpus. A hidden record never enters a candidate pool, a feedback
set or the statistics of a fusion, so a query drawn from the corpus is answered as a corpus without
its own record would answer it. Only BM25's corpus statistics (document frequencies) still count the
hidden records; tests bound that difference.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import get_args

import numpy as np

from patientinsight.embedding.encoder import Embedder
from patientinsight.index.lexical import LexicalIndex
from patientinsight.index.records import largest
from patientinsight.index.types import Exclusion, Filters, Hit, IndexReader
from patientinsight.settings import RetrieverName, Settings

RETRIEVERS: tuple[str, ...] = get_args(RetrieverName)
# hybrid_rerank encodes the query here while BM25 runs in the caller's thread: both release the GIL, so
# on two cores one query's latency is the longer of the two, not their sum.
_ENCODING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-encoding")
DENSE_RETRIEVERS = frozenset({"dense", "hybrid", "hybrid_rerank"})  # those that encode the query


def _hide(scores: np.ndarray, hidden: np.ndarray | None) -> np.ndarray:
    """The scores with hidden records (excluded, filtered out) at -inf."""
    return scores if hidden is None else np.where(hidden, -np.inf, scores).astype(np.float32)


def _standardized(scores: np.ndarray, hidden: np.ndarray | None) -> np.ndarray:
    """Scores on one scale (z-scores), so dense cosines and BM25 sums can be added; the mean and the
    spread are the visible records' only."""
    sample = scores if hidden is None else scores[~hidden]
    spread = float(sample.std()) if len(sample) else 0.0
    return (scores - float(sample.mean())) / spread if spread > 0 else np.zeros_like(scores)


@dataclass(frozen=True)
class RetrievalConfig:
    """The retriever and its knobs, with the settings' defaults: the service, the command line, the
    gate and the benchmarks all build their searcher from one of these."""

    retriever: str = Settings.model_fields["retriever"].default
    hybrid_weight: float = Settings.model_fields["hybrid_weight"].default
    rerank_weight: float = Settings.model_fields["rerank_weight"].default
    rerank_candidates: int = Settings.model_fields["rerank_candidates"].default
    rm3_weight: float = Settings.model_fields["rm3_weight"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrievalConfig:
        return cls(
            retriever=settings.retriever,
            hybrid_weight=settings.hybrid_weight,
            rerank_weight=settings.rerank_weight,
            rerank_candidates=settings.rerank_candidates,
            rm3_weight=settings.rm3_weight,
        )


@dataclass
class Searcher:
    """Every retriever of one version."""

    reader: IndexReader
    embedder: Embedder
    config: RetrievalConfig = field(default_factory=RetrievalConfig)

    @classmethod
    def for_settings(cls, reader: IndexReader, embedder: Embedder, settings: Settings) -> Searcher:
        """Queries are encoded as the version's documents were (same precision class; see
        Embedder.for_version), by whoever searches: the service, the command line, the gate."""
        return cls(reader, embedder.for_version(reader.manifest), RetrievalConfig.from_settings(settings))

    @cached_property
    def lexical(self) -> LexicalIndex:
        return LexicalIndex(self.reader.path)

    def query_vector(self, query: str) -> np.ndarray:
        return self.embedder.embed_query(query)

    def scores(
        self,
        retriever: str,
        query: str,
        vector: np.ndarray | None = None,
        exclude: Exclusion = (),
        filters: Filters | None = None,
    ) -> np.ndarray:
        """Every record's score for the query; hidden records (excluded, filtered out) score -inf."""
        if retriever not in RETRIEVERS:
            raise ValueError(f"unknown retriever '{retriever}'; choose one of {', '.join(RETRIEVERS)}")
        hidden = self.reader.hidden(exclude, filters)
        if retriever == "hybrid_rerank":
            scores = self._reranked(query, vector, hidden)
        else:
            scores = self._corpus_scores(retriever, query, vector, hidden)
        return _hide(scores, hidden)

    def _vector(self, query: str, vector: np.ndarray | None) -> np.ndarray:
        return self.query_vector(query) if vector is None else vector

    def _corpus_scores(
        self, retriever: str, query: str, vector: np.ndarray | None, hidden: np.ndarray | None
    ) -> np.ndarray:
        if retriever == "dense":
            return self.reader.scores(self._vector(query, vector))[0]
        if retriever == "lexical":
            return self.lexical.scores(query)
        if retriever == "lexical_rm3":
            return self.lexical.expanded_scores(query, weight=self.config.rm3_weight, hidden=hidden)
        if retriever == "hybrid":
            dense = self.reader.scores(self._vector(query, vector))[0]
            lexical = self.lexical.scores(query)
            w = self.config.hybrid_weight
            return (w * _standardized(dense, hidden) + (1 - w) * _standardized(lexical, hidden)).astype(np.float32)
        raise ValueError(f"retriever '{retriever}' does not score the whole corpus")

    def rerank_pool(self, query: str, hidden: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What hybrid_rerank rescores: the `rerank_candidates` best visible BM25 records, the other
        matching ones, and every record's BM25 score (hidden ones 0)."""
        lexical = self.lexical.scores(query)
        if hidden is not None:
            lexical = np.where(hidden, 0.0, lexical).astype(np.float32)
        matching = np.flatnonzero(lexical > 0)
        pool = self.config.rerank_candidates
        if len(matching) <= pool:
            return matching, np.empty(0, dtype=np.int64), lexical
        # A partition, not a sort: a short query can match most of 250,000 records. More records match
        # than the pool holds, so the pool's records all score above 0 (hidden ones score 0).
        best = largest(lexical, pool)
        chosen = np.zeros(len(lexical), dtype=bool)
        chosen[best] = True
        return np.flatnonzero(chosen), matching[~chosen[matching]], lexical

    def _reranked(self, query: str, vector: np.ndarray | None, hidden: np.ndarray | None) -> np.ndarray:
        """Every record's hybrid_rerank score: the pool's fused ones (`_rescored`), then the other
        matching records in BM25 order, so the top of the ranking is the same whatever k a caller asks
        for. A query no visible record shares a term with is ranked by the dense scores alone. `scores`
        hides the hidden records."""
        return self._spread(*self._rescored(query, vector, hidden))

    def _rescored(
        self, query: str, vector: np.ndarray | None, hidden: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
        """The pool (`rerank_pool`) rescored by dense and BM25 z-scores taken over it (the dense side
        reads only the pool's vectors): (pool, its fused scores, the other matching records, every BM25
        score, the query vector); the fused scores are None when no visible record shares a term with
        the query (the pool is empty)."""
        encoding = _ENCODING.submit(self.query_vector, query) if vector is None else None
        pool, rest, lexical = self.rerank_pool(query, hidden)
        if encoding is not None:
            vector = encoding.result()
        assert vector is not None  # given, or encoded while BM25 ran
        if len(pool) == 0:
            return pool, None, rest, lexical, vector
        dense = self.reader.scores_at(vector, pool)
        w = self.config.rerank_weight
        fused = w * _standardized(dense, None) + (1 - w) * _standardized(lexical[pool], None)
        return pool, fused.astype(np.float32, copy=False), rest, lexical, vector

    def _spread(
        self, pool: np.ndarray, fused: np.ndarray | None, rest: np.ndarray, lexical: np.ndarray, vector: np.ndarray
    ) -> np.ndarray:
        """`_rescored`'s answer as every record's score (the dense ones alone for an empty pool): every
        score outside the pool is lower than any inside."""
        if fused is None:
            return self.reader.scores(vector)[0]
        out = np.full(len(lexical), -np.inf, dtype=np.float32)
        out[pool] = fused
        if len(rest):  # below every candidate, in BM25 order
            out[rest] = float(fused.min()) - 2.0 + lexical[rest] / float(lexical[rest].max())
        return out

    def search(
        self,
        query: str,
        k: int,
        filters: Filters | None = None,
        retriever: str | None = None,
        vector: np.ndarray | None = None,
        exclude: Exclusion = (),
    ) -> list[Hit]:
        """The k best records for the query, never one of `exclude`."""
        retriever = retriever or self.config.retriever
        if retriever == "dense":  # keeps the best chunk of each hit, for passages
            return self.reader.search(self._vector(query, vector), k, filters, exclude)
        if retriever == "hybrid_rerank":
            return self._reranked_top(query, k, vector, self.reader.hidden(exclude, filters))
        scores = self.scores(retriever, query, vector, exclude, filters)  # filtered out: -inf already
        return [Hit(self.reader.uid_at(i), score, 0) for i, score in self.reader.top(scores, k)]

    def _reranked_top(self, query: str, k: int, vector: np.ndarray | None, hidden: np.ndarray | None) -> list[Hit]:
        """hybrid_rerank's k best, taken from its pool alone when the pool holds k (nothing outside it
        scores as high, and no hidden record enters it): 100 scores sorted instead of 250,000
        partitioned."""
        if k <= 0:
            return []
        pool, fused, _, _, _ = rescored = self._rescored(query, vector, hidden)
        if fused is not None and len(pool) >= k:  # no array of every record's score is made
            best = np.argsort(-fused, kind="stable")[:k]
            return [Hit(self.reader.uid_at(int(pool[i])), float(fused[i]), 0) for i in best]
        out = self._spread(*rescored)
        return [Hit(self.reader.uid_at(i), score, 0) for i, score in self.reader.top(_hide(out, hidden), k)]
