"""Retrieval quality of an index version: every retriever, both query modes, on the holdout half,
with breakdowns by sex and age band; and the official benchmark (BEIR files) on demand."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientinsight.beir import load_corpus, load_queries
from patientinsight.embedding import Embedder
from patientinsight.evaluation import Query, build_queries, evaluate, evaluate_by_group, query_text
from patientinsight.index import EmbeddedBatch, EmbeddedIndex, EmbeddedReader
from patientinsight.lexical import write_index
from patientinsight.retrievers import RETRIEVERS, Searcher
from patientinsight.settings import Settings

RECORD_COLUMNS = ["uid", "pmid", "text", "sex", "age_years", "similar_patients"]


def searcher_for(reader: EmbeddedReader, embedder: Embedder, settings: Settings) -> Searcher:
    return Searcher(reader, embedder, hybrid_weight=settings.hybrid_weight, rm3_weight=settings.rm3_weight)


def _rows(searcher: Searcher, queries: list[Query], retriever: str, mode: str, default: str) -> dict[str, Any]:
    # Dense and hybrid need query vectors: encode them all at once rather than one per search.
    vectors: dict[str, np.ndarray] = {}
    if retriever in ("dense", "hybrid") and queries:
        vectors = dict(zip([q.uid for q in queries], searcher.embedder.encode([q.text for q in queries]), strict=True))

    def retrieve(q: Query, k: int) -> list[str]:
        return [h.uid for h in searcher.search(q.text, k, None, retriever, vectors.get(q.uid))]

    metrics = evaluate(queries, retrieve)
    return {
        "retriever": retriever,
        "queries_mode": mode,
        **{k: (int(v) if k == "queries" else round(v, 4)) for k, v in metrics.items()},
        "by_group": {
            name: {k: round(v, 4) for k, v in m.items()} for name, m in evaluate_by_group(queries, retrieve).items()
        },
        "default": retriever == default,
    }


def evaluate_version(
    reader: EmbeddedReader,
    embedder: Embedder,
    settings: Settings,
    retrievers: tuple[str, ...] = RETRIEVERS,
    modes: tuple[str, ...] = ("short", "full"),
    split: str | None = "holdout",
    max_queries: int | None = None,
) -> list[dict[str, Any]]:
    # Every record's links, but only the chosen queries' texts: all texts of a 250,000-record version
    # would hold about a GB (benchmarks/scale_250k.py).
    columns = [c for c in RECORD_COLUMNS if c != "text"]
    records = pd.read_parquet(reader.path / "records.parquet", columns=columns).assign(text="")
    searcher = searcher_for(reader, embedder, settings)
    out: list[dict[str, Any]] = []
    for mode in modes:
        queries = build_queries(records, mode=mode, split=split)[:max_queries]
        texts = reader.records([q.uid for q in queries])["text"].tolist() if queries else []
        queries = [replace(q, text=query_text(t, mode)) for q, t in zip(queries, texts, strict=True)]
        out.extend(_rows(searcher, queries, r, mode, settings.retriever) for r in retrievers)
    return out


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
        if any(r in ("dense", "hybrid") for r in retrievers):
            vectors, counts = embedder.embed_documents(corpus["text"].tolist())
        else:  # lexical only: one zero vector per document keeps the version well-formed
            vectors, counts = np.zeros((len(corpus), embedder.dim), np.float32), np.ones(len(corpus), np.int64)
        builder.upsert(EmbeddedBatch(corpus, vectors, counts))
        version = builder.commit(
            extras=lambda f, r: write_index(f, r["title"].tolist(), r["text"].tolist(), settings.title_weight)
        )
        searcher = searcher_for(index.open(version), embedder, settings)
        return [_rows(searcher, queries, r, "full", settings.retriever) for r in retrievers]
