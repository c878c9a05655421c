"""Lexical index, RM3 feedback, every retriever's filters, the gate rule, and the BEIR loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from patientinsight.embedding.encoder import Embedder
from patientinsight.evaluation.beir import load_corpus, load_queries
from patientinsight.evaluation.metrics import Query, evaluate_by_group
from patientinsight.evaluation.report import evaluate_benchmark
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.lexical import LexicalIndex, lexical_index_hook, tokenize, write_index
from patientinsight.index.types import EmbeddedBatch, Filters
from patientinsight.retrieval.searcher import RETRIEVERS, RetrievalConfig, Searcher
from patientinsight.settings import Settings

TEXTS = [
    ("Pneumonia", "A man with fever, productive cough and lobar consolidation treated with ceftriaxone.", 70.0, "M"),
    ("Pneumonia again", "A woman with fever, cough and consolidation of the right lower lobe.", 35.0, "F"),
    ("Appendicitis", "A girl with right iliac fossa pain, anorexia and an inflamed appendix.", 12.0, "F"),
    ("Kawasaki disease", "A boy with fever, conjunctival injection and coronary artery dilatation.", 4.0, "M"),
]


def frame() -> pd.DataFrame:
    n = len(TEXTS)
    return pd.DataFrame({
        "uid": [f"{i}-1" for i in range(n)], "pmid": ["1"] * n, "title": [t[0] for t in TEXTS],
        "text": [t[1] for t in TEXTS], "age_years": [t[2] for t in TEXTS], "sex": [t[3] for t in TEXTS],
        "pub_date": [None] * n, "similar_patients": ["{}"] * n, "relevant_articles": ["{}"] * n,
        "content_hash": ["h"] * n,
    })  # fmt: skip


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Searcher:
    records = frame()
    vectors, counts = embedder.embed_documents(records["text"].tolist())
    index = EmbeddedIndex(tmp_path_factory.mktemp("index"))
    builder = index.builder(None, embedder.describe())
    builder.upsert(EmbeddedBatch(records, vectors, counts))
    version = builder.commit(staged_extras=lexical_index_hook())
    return Searcher(index.open(version), embedder)


def test_tokenize_stems_and_drops_stop_words() -> None:
    assert tokenize(["The fevers and coughing"]) == [["fever", "cough"]]


def test_lexical_scores_only_matching_documents(tmp_path: Path) -> None:
    write_index(tmp_path, ["a", "b"], ["fever and cough", "broken wrist"])
    scores = LexicalIndex(tmp_path).scores("coughing fever")
    assert scores[0] > 0 and scores[1] == 0
    assert not LexicalIndex(tmp_path).scores("zebra").any()


def test_rm3_brings_in_documents_sharing_feedback_terms(searcher: Searcher) -> None:
    # "productive" only occurs in the first case; feedback adds its other terms (fever, consolidation...)
    base = searcher.lexical.scores("productive")
    expanded = searcher.lexical.expanded_scores("productive", feedback_docs=1, weight=0.5)
    assert base[1] == 0 and expanded[1] > 0
    assert np.argmax(expanded) == 0


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_every_retriever_ranks_and_filters(searcher: Searcher, retriever: str) -> None:
    hits = searcher.search("fever cough consolidation", 4, None, retriever)
    assert hits[0].uid in {"0-1", "1-1"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    females = searcher.search("fever cough consolidation", 4, Filters(sex="F"), retriever)
    assert females and {h.uid for h in females} <= {"1-1", "2-1"}
    children = searcher.search("fever", 4, Filters(age_max=17), retriever)
    assert children and {h.uid for h in children} <= {"2-1", "3-1"}
    assert searcher.search("fever", 4, Filters(age_min=100), retriever) == []


BEST_NOT_FIRST = "fever with conjunctival injection and a cough"  # the pool's best is its second by position


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("hide", [None, "exclude", "filter"])
@pytest.mark.parametrize("query", ["fever cough consolidation", BEST_NOT_FIRST, "zebra"])
def test_hybrid_rerank_top_k_is_the_top_of_its_scores(searcher: Searcher, k: int, hide: str | None, query: str) -> None:
    """With a pool of 2, k <= 2 is answered from the pool alone, k > 2 from every record's scores, and a
    query no record shares a term with ("zebra") from the dense scores: each gives what ranking `scores`
    gives, hits and scores alike."""
    small_pool = Searcher(searcher.reader, searcher.embedder, RetrievalConfig(rerank_candidates=2))
    exclude = ["0-1"] if hide == "exclude" else []
    filters = Filters(age_min=10) if hide == "filter" else None
    scores = small_pool.scores("hybrid_rerank", query, exclude=exclude, filters=filters)
    order = [int(i) for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])][:k]
    expected = [(small_pool.reader.uid_at(i), float(scores[i])) for i in order]
    hits = small_pool.search(query, k, filters, "hybrid_rerank", exclude=exclude)
    assert expected and [(h.uid, h.score) for h in hits] == expected


def test_the_pools_best_need_not_come_first_in_it(searcher: Searcher) -> None:
    """The case the test above must hold for: the pool's best record is not its first by position, so a top
    k taken from the pool unsorted would be caught."""
    small_pool = Searcher(searcher.reader, searcher.embedder, RetrievalConfig(rerank_candidates=2))
    pool, _, _ = small_pool.rerank_pool(BEST_NOT_FIRST, None)
    best = small_pool.search(BEST_NOT_FIRST, 1, retriever="hybrid_rerank")[0]
    assert len(pool) == 2 and small_pool.reader.positions([best.uid])[0] == pool[1]


def test_unknown_retriever(searcher: Searcher) -> None:
    with pytest.raises(ValueError, match="unknown retriever 'bm99'"):
        searcher.search("fever", 3, None, "bm99")


def test_metrics_by_group() -> None:
    queries = [Query("a", "t", {"x": 1}, "F", 30.0), Query("b", "t", {"y": 1}, "M", 70.0)]
    groups = evaluate_by_group(queries, lambda q, k: ["x"])
    assert groups["sex=F"]["mrr"] == 1.0 and groups["sex=M"]["mrr"] == 0.0
    assert groups["age=18-39"]["queries"] == 1 and groups["age=65+"]["mrr"] == 0.0


def test_beir_loader(repo_root: Path) -> None:
    folder = repo_root / "tests" / "fixtures" / "beir"
    corpus = load_corpus(folder)
    assert list(corpus["uid"]) == ["1-1", "2-1", "3-1", "4-1"]
    queries = load_queries(folder, "test")
    assert [(q.uid, q.relevant) for q in queries] == [("q-1", {"1-1": 1, "3-1": 2}), ("q-2", {"2-1": 1})]
    with pytest.raises(FileNotFoundError, match="no judgments for split 'train'"):
        load_queries(folder, "train")


def test_benchmark_evaluation_follows_the_judgments(repo_root: Path, embedder: Embedder) -> None:
    rows = evaluate_benchmark(repo_root / "tests" / "fixtures" / "beir", "test", embedder, Settings(), ("lexical",))
    (row,) = rows
    assert row["retriever"] == "lexical" and row["queries"] == 2 and row["mrr"] == 1.0


def test_largest_finds_the_same_values_as_a_full_partition() -> None:
    """The sampled threshold never loses one of the n largest: ties, -inf and short arrays included."""
    from patientinsight.index.records import largest

    rng = np.random.default_rng(0)
    for trial in range(60):
        values = rng.standard_normal(int(rng.integers(50, 60_000))).astype(np.float32)
        if trial % 3 == 0:
            values = np.round(values, 1)  # many ties at the edge
        if trial % 4 == 0:
            values[rng.random(len(values)) < 0.5] = -np.inf
        n = int(rng.integers(1, 120))
        n = min(n, len(values))
        expected = np.sort(np.partition(values, len(values) - n)[len(values) - n :])
        assert np.array_equal(np.sort(values[largest(values, n)]), expected), trial
        assert len(set(largest(values, n).tolist())) == n
