"""Retrieval quality of an index version: every retriever, both query modes, on the holdout half,
with breakdowns by sex and age band; and the official benchmark (BEIR files) on demand. Every query
comes from the corpus, so its own record is hidden from the retriever (leave-one-out)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientinsight.embedding.encoder import Embedder
from patientinsight.evaluation.beir import load_corpus, load_queries
from patientinsight.evaluation.metrics import (
    PROTOCOL,
    Query,
    build_queries,
    evaluate_by_group,
    evaluate_queries,
    query_text,
)
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.lexical import bm25_params, lexical_index_hook
from patientinsight.index.types import EmbeddedBatch, Exclusion, IndexReader
from patientinsight.retrieval.searcher import DENSE_RETRIEVERS, RETRIEVERS, Searcher
from patientinsight.settings import Settings

EVALUATED_COLUMNS = ["uid", "pmid", "text", "sex", "age_years", "similar_patients"]


def query_vectors(embedder: Embedder, queries: list[Query], retriever: str) -> dict[str, np.ndarray]:
    """The queries' vectors, encoded at once, for the retrievers that need them (one encode per
    search would cost more than the search)."""
    if retriever not in DENSE_RETRIEVERS or not queries:
        return {}
    return dict(zip([q.uid for q in queries], embedder.encode([q.text for q in queries]), strict=True))


def ranker(
    searcher: Searcher, retriever: str, vectors: dict[str, np.ndarray], also_hidden: frozenset[str] = frozenset()
) -> Callable[[Query, int], list[str]]:
    """`retrieve(query, k)` for the evaluation: the query's own record (and `also_hidden`) excluded
    before retrieval, the leave-one-out protocol."""

    base = searcher.reader.hidden(also_hidden) if also_hidden else None  # built once, not per query

    def retrieve(q: Query, k: int) -> list[str]:
        hidden: Exclusion = (q.uid,)
        if base is not None:
            hidden = base.copy()
            hidden[searcher.reader.positions([q.uid])] = True
        return [h.uid for h in searcher.search(q.text, k, None, retriever, vectors.get(q.uid), exclude=hidden)]

    return retrieve


def _rows(searcher: Searcher, queries: list[Query], retriever: str, mode: str) -> dict[str, Any]:
    retrieve = ranker(searcher, retriever, query_vectors(searcher.embedder, queries, retriever))
    metrics = evaluate_queries(queries, retrieve)
    return {
        "retriever": retriever,
        "queries_mode": mode,
        "protocol": PROTOCOL,
        **{k: (int(v) if k == "queries" else round(v, 4)) for k, v in metrics.items()},
        "by_group": {
            name: {k: round(v, 4) for k, v in m.items()} for name, m in evaluate_by_group(queries, retrieve).items()
        },
        "default": retriever == searcher.config.retriever,
    }


def evaluate_retrievers(
    reader: IndexReader,
    embedder: Embedder,
    settings: Settings,
    retrievers: tuple[str, ...] = RETRIEVERS,
    modes: tuple[str, ...] = ("short", "full"),
    split: str | None = "holdout",
    max_queries: int | None = None,
) -> list[dict[str, Any]]:
    # Every record's links, but only the chosen queries' texts: all texts of a 250,000-record version
    # would hold about a GB (benchmarks/scale_250k.py).
    records = links_of(reader)
    searcher = Searcher.for_settings(reader, embedder, settings)
    out: list[dict[str, Any]] = []
    for mode in modes:
        queries = with_texts(reader, build_queries(records, mode=mode, split=split)[:max_queries], mode)
        out.extend(_rows(searcher, queries, r, mode) for r in retrievers)
    return out


def links_of(reader: IndexReader) -> pd.DataFrame:
    """Every record's judgments and query metadata, texts left empty: `with_texts` reads the queries'
    texts on their own."""
    columns = [c for c in EVALUATED_COLUMNS if c != "text"]
    return reader.frame(columns).assign(text="")


def with_texts(reader: IndexReader, queries: list[Query], mode: str) -> list[Query]:
    """The queries with their texts read from the version (only theirs: see evaluate_retrievers)."""
    texts = reader.records([q.uid for q in queries])["text"].tolist() if queries else []
    return [replace(q, text=query_text(t, mode)) for q, t in zip(queries, texts, strict=True)]


def evaluate_benchmark(
    folder: Path, split: str, embedder: Embedder, settings: Settings, retrievers: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Index the benchmark corpus in a temporary version and run its judged queries (the official
    protocol: full summaries as queries, the query's own id excluded)."""
    corpus = load_corpus(folder)
    queries = load_queries(folder, split)
    with tempfile.TemporaryDirectory() as tmp:
        index = EmbeddedIndex(Path(tmp))
        builder = index.builder(None, embedder.describe())
        if any(r in DENSE_RETRIEVERS for r in retrievers):
            vectors, counts = embedder.embed_documents(corpus["text"].tolist())
        else:  # lexical only: one zero vector per document keeps the version well-formed
            vectors, counts = np.zeros((len(corpus), embedder.dim), np.float32), np.ones(len(corpus), np.int64)
        builder.upsert(EmbeddedBatch(corpus, vectors, counts))
        params = bm25_params(settings)
        version = builder.commit(staged_extras=lexical_index_hook(params))
        searcher = Searcher.for_settings(index.open(version), embedder, settings)
        return [_rows(searcher, queries, r, "full") for r in retrievers]
