from __future__ import annotations

import numpy as np
import pytest

from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.model import PACKAGED_MODEL


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


def test_a_task_process_shows_no_progress_bar_and_logs_what_it_loaded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An Airflow task's stderr is a pipe, and the UI shows what comes through it at ERROR level: the
    libraries' "Loading weights" bar must stay off it, and one log line says what was loaded."""
    import os
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from patientinsight.embedding.encoder import make_embedder\n"
        "from patientinsight.settings import Settings\n"
        "print(make_embedder(Settings()).encode(['chest pain on exertion']).shape)\n"
    )
    # torch fp32: every backend loads the model through load_model, and this one needs no measuring.
    env = {
        **os.environ,
        "PATIENTINSIGHT_MODEL_CACHE_DIR": str(tmp_path / "models"),
        "PATIENTINSIGHT_EMBEDDING_BACKEND": "torch",
        "PATIENTINSIGHT_EMBEDDING_PRECISION": "fp32",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600, check=True
    )
    assert "Loading weights" not in done.stderr and "it/s]" not in done.stderr, done.stderr
    assert "embedding model packaged:all-MiniLM-L6-v2 loaded from" in done.stdout
    assert "(1, 384)" in done.stdout
