from __future__ import annotations

import numpy as np
import pytest

from patientinsight.embedding.encoder import PACKAGED_MODEL, Embedder


def test_chunks_are_verbatim_overlapping_windows(embedder: Embedder) -> None:
    text = " ".join(f"word{i}" for i in range(300))
    chunks = embedder.split([text, "short text"])
    assert chunks.counts.tolist()[1] == 1
    assert chunks.counts[0] > 1
    pieces = chunks.texts[: chunks.counts[0]]
    assert all(p in text for p in pieces)
    assert pieces[0].startswith("word0") and pieces[-1].endswith("word299")
    tokenizer = embedder.model.tokenizer
    assert all(len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= 64 for p in pieces)
    # consecutive windows share the overlap
    assert pieces[0].split()[-1] in pieces[1]


def test_truncate_strategy_keeps_one_vector_per_text() -> None:
    chunks = Embedder(PACKAGED_MODEL, strategy="truncate").split(["a b c", "d"])
    assert chunks.texts == ["a b c", "d"] and chunks.counts.tolist() == [1, 1]


def test_encode_is_normalized_and_meaningful(embedder: Embedder) -> None:
    vectors = embedder.encode(["fever and cough in a child", "a child with cough and fever", "invoice overdue"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_embed_documents_counts_match_vectors(embedder: Embedder) -> None:
    vectors, counts = embedder.embed_documents(["one " * 200, "two"])
    assert len(vectors) == counts.sum() and counts[1] == 1


def test_overlap_must_be_smaller_than_window() -> None:
    with pytest.raises(ValueError):
        Embedder(PACKAGED_MODEL, chunk_tokens=10, chunk_overlap=10)
