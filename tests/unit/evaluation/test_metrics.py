from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from patientinsight.evaluation.metrics import build_queries, ndcg_at, precision_at, recall_at, reciprocal_rank, split_of
from patientinsight.retrieval.passages import first_sentences


def test_reciprocal_rank() -> None:
    assert reciprocal_rank(["x", "a", "b"], {"a": 1}) == 0.5
    assert reciprocal_rank(["x", "y"], {"a": 1}) == 0.0


def test_precision_and_recall() -> None:
    ranked = ["a", "x", "b", "y"]
    assert precision_at(ranked, {"a": 1, "b": 2}, 10) == pytest.approx(0.2)
    assert recall_at(ranked, {"a": 1, "b": 2, "c": 1}, 2) == pytest.approx(1 / 3)


def test_ndcg_hand_computed() -> None:
    # gains 0, 2, 1 at ranks 1..3; ideal order 2, 1
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(["x", "a", "b"], {"a": 2, "b": 1}, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b"], {"a": 2, "b": 1}, 10) == pytest.approx(1.0)


def test_first_sentences() -> None:
    assert first_sentences("A 5-year-old boy had fever. He had a rash. Then it resolved.") == (
        "A 5-year-old boy had fever. He had a rash."
    )
    assert first_sentences("Only one sentence") == "Only one sentence"


def test_queries_come_from_in_corpus_annotations_and_split_by_article() -> None:
    frame = pd.DataFrame({
        "uid": ["1-1", "1-2", "2-1"], "pmid": ["11", "11", "22"], "text": ["One. Two. Three."] * 3,
        "similar_patients": [json.dumps({"1-2": 2, "9-9": 1}), json.dumps({"1-1": 2}), "{}"],
    })  # fmt: skip
    everything = build_queries(frame, mode="full", split=None)
    assert [(q.uid, q.relevant) for q in everything] == [("1-1", {"1-2": 2}), ("1-2", {"1-1": 2})]
    short = build_queries(frame, mode="short", split=None)
    assert short[0].text == "One. Two."
    halves = {split_of("11")}
    assert len(build_queries(frame, split=halves.pop())) == 2
    assert {split_of(str(i)) for i in range(100)} == {"tune", "holdout"}
