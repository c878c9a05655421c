"""Retrievers over one index version: dense (the embedding), lexical (BM25), lexical with RM3
feedback, and a hybrid of dense and lexical scores. Each scores every record, and the reader's `top`
applies the filters and takes the k best, so filters work the same in all of them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from patientinsight.embedding import Embedder
from patientinsight.index import EmbeddedReader, Filters, Hit
from patientinsight.lexical import LexicalIndex

RETRIEVERS = ("dense", "lexical", "lexical_rm3", "hybrid")


def _standardized(scores: np.ndarray) -> np.ndarray:
    """Scores on one scale (z-scores over the corpus), so dense cosines and BM25 sums can be added."""
    spread = float(scores.std())
    return (scores - float(scores.mean())) / spread if spread > 0 else np.zeros_like(scores)


@dataclass
class Searcher:
    """Every retriever of one version. `hybrid_weight` is the dense share of the hybrid score."""

    reader: EmbeddedReader
    embedder: Embedder
    hybrid_weight: float = 0.3
    rm3_weight: float = 0.5

    @cached_property
    def lexical(self) -> LexicalIndex:
        return LexicalIndex(self.reader.path)

    def query_vector(self, query: str) -> np.ndarray:
        return self.embedder.embed_query(query)

    def scores(self, retriever: str, query: str, vector: np.ndarray | None = None) -> np.ndarray:
        if retriever == "dense":
            return self.reader.scores(self.query_vector(query) if vector is None else vector)[0]
        if retriever == "lexical":
            return self.lexical.scores(query)
        if retriever == "lexical_rm3":
            return self.lexical.expanded_scores(query, weight=self.rm3_weight)
        if retriever == "hybrid":
            dense = self.scores("dense", query, vector)
            lexical = self.lexical.scores(query)
            w = self.hybrid_weight
            return (w * _standardized(dense) + (1 - w) * _standardized(lexical)).astype(np.float32)
        raise ValueError(f"unknown retriever '{retriever}'; choose one of {', '.join(RETRIEVERS)}")

    def search(
        self,
        query: str,
        k: int,
        filters: Filters | None = None,
        retriever: str = "lexical",
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        if retriever == "dense":  # keeps the best chunk of each hit, for passages
            return self.reader.search(self.query_vector(query) if vector is None else vector, k, filters)
        ranked = self.reader.top(self.scores(retriever, query, vector), k, filters)
        return [Hit(self.reader.uid_at(i), score, 0) for i, score in ranked]
