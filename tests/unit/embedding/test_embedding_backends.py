"""The ONNX Runtime backend against torch: same vectors, an export made once and reused, torch as the
fallback, and length batching that hands vectors back in input order."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from patientinsight.embedding import encoder
from patientinsight.embedding import onnx as onnx_export
from patientinsight.embedding.encoder import PACKAGED_MODEL, Embedder, length_batches, make_embedder
from patientinsight.embedding.onnx import UnsupportedModel, model_head
from patientinsight.settings import Settings

REAL_TEXTS = 40  # truncated at 256 tokens: a few seconds per backend on two cores


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(PACKAGED_MODEL, strategy="truncate", backend="torch")


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir: Path) -> Embedder:
    onnx = Embedder(PACKAGED_MODEL, strategy="truncate", backend="onnx", cache_dir=cache_dir)
    assert onnx.active_backend == "onnx"  # not the torch fallback: the comparisons below would be vacuous
    return onnx


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.mark.realdata
def test_onnx_agrees_with_torch_on_real_records(
    real_data_dir: Path, torch_embedder: Embedder, onnx_embedder: Embedder
) -> None:
    texts = (
        pd.read_csv(real_data_dir / "PMC-Patients-sample-1000.csv", nrows=REAL_TEXTS)["patient"].astype(str).tolist()
    )
    assert len(texts) == REAL_TEXTS
    expected, got = torch_embedder.encode(texts), onnx_embedder.encode(texts)
    assert got.shape == expected.shape == (REAL_TEXTS, 384) and got.dtype == np.float32
    assert cosines(expected, got).min() > 0.999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_onnx_agrees_with_torch_on_the_synthetic_sample(
    sample_csv: Path, torch_embedder: Embedder, onnx_embedder: Embedder
) -> None:
    texts = pd.read_csv(sample_csv)["patient"].astype(str).tolist()[:24]
    assert len(texts) == 24
    # chunked windows too: short texts of many lengths, padded together in one batch
    chunker = Embedder(PACKAGED_MODEL, strategy="chunk", chunk_tokens=48, chunk_overlap=8)
    windows = chunker.split(texts[:8]).texts
    assert len(windows) > len(texts[:8])
    for batch in (texts, windows):
        assert cosines(torch_embedder.encode(batch), onnx_embedder.encode(batch)).min() > 0.999


def test_queries_agree_and_rank_alike(torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    query = "fever and cough in a child"
    assert float(torch_embedder.embed_query(query) @ onnx_embedder.embed_query(query)) > 0.999
    docs = onnx_embedder.encode(["a child with cough and fever", "invoice overdue"])
    assert docs[0] @ onnx_embedder.embed_query(query) > docs[1] @ onnx_embedder.embed_query(query)


def test_switching_backend_does_not_force_re_embedding(torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    assert onnx_embedder.describe() == torch_embedder.describe()


def test_export_is_cached_and_reused(
    cache_dir: Path, onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exports = list(cache_dir.glob("*.onnx"))
    assert len(exports) == 1 and exports[0].stat().st_size > 10_000_000
    assert not [p for p in cache_dir.iterdir() if p.suffix == ".tmp"]  # the temporary file was renamed
    before = exports[0].stat().st_mtime_ns

    def no_export(*args: Any) -> Path:
        raise AssertionError("exported again")

    monkeypatch.setattr(encoder, "export_onnx", no_export)
    with caplog.at_level(logging.INFO, logger="patientinsight.embedding.encoder"):
        again = Embedder(PACKAGED_MODEL, strategy="truncate", backend="onnx", cache_dir=cache_dir)
        assert again.active_backend == "onnx"
    assert "ONNX export reused" in caplog.text
    assert exports[0].stat().st_mtime_ns == before and list(cache_dir.glob("*.onnx")) == exports
    # the key covers the model and the export settings
    model = onnx_embedder.model
    key = onnx_export.export_key(PACKAGED_MODEL, model)
    assert key == onnx_export.export_key(PACKAGED_MODEL, model)
    assert key != onnx_export.export_key(PACKAGED_MODEL, model, quantize=True)
    assert key != onnx_export.export_key("another-model", model)


def test_falls_back_to_torch_when_the_export_fails(
    tmp_path: Path, torch_embedder: Embedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_export(*args: Any) -> Path:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(encoder, "export_onnx", broken_export)
    fallback = Embedder(PACKAGED_MODEL, strategy="truncate", backend="onnx", cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="patientinsight.embedding.encoder"):
        vectors = fallback.encode(["fever and cough in a child", "invoice overdue"])
    assert fallback.active_backend == "torch"
    assert "falling back to torch" in caplog.text and "exporter exploded" in caplog.text
    assert np.allclose(vectors, torch_embedder.encode(["fever and cough in a child", "invoice overdue"]), atol=1e-6)
    assert not list(tmp_path.iterdir())


def test_unsupported_model_heads_are_refused() -> None:
    class Transformer:
        pass

    class Pooling:
        def __init__(self, mode: str) -> None:
            self.mode = mode

        def get_config_dict(self) -> dict[str, Any]:
            return {"pooling_mode": self.mode, "include_prompt": True}

    class Dense:
        pass

    class Model(list):
        max_seq_length = 128

    head = model_head(Model([Transformer(), Pooling("cls")]))
    assert head.pooling == "cls" and not head.normalize and head.max_seq_length == 128
    with pytest.raises(UnsupportedModel):
        model_head(Model([Transformer(), Pooling("lasttoken")]))
    with pytest.raises(UnsupportedModel):
        model_head(Model([Transformer(), Pooling("mean"), Dense()]))


def test_length_batches_group_similar_lengths() -> None:
    lengths = [5, 300, 7, 120, 300, 6, 119]
    batches = length_batches(lengths, 3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(lengths[i] for i in batches[0]) == [120, 300, 300]
    assert max(lengths[i] for i in batches[1]) < min(lengths[i] for i in batches[0])


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_length_batching_returns_vectors_in_input_order(backend: str, cache_dir: Path, onnx_embedder: Embedder) -> None:
    words = ["fever", "cough", "rash", "seizure", "anaemia", "fracture", "jaundice", "sepsis"]
    texts = [" ".join(words[: 1 + (i * 5) % 8] * (1 + (i * 7) % 9)) + f" case {i}" for i in range(11)]
    assert len({len(t) for t in texts}) > 5  # lengths really differ, so sorting reorders them
    embedder = Embedder(PACKAGED_MODEL, strategy="truncate", batch_size=3, backend=backend, cache_dir=cache_dir)
    together = embedder.encode(texts, progress_every=7)  # two sort windows
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    assert cosines(together, alone).min() > 0.9999
    assert embedder.active_backend == backend


def test_settings_choose_backend_and_threads(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, embedding_backend="torch", embed_threads=1)
    built = make_embedder(settings)
    assert (built.backend, built.threads, built.cache_dir) == ("torch", 1, tmp_path / "models")
    assert Settings(home=tmp_path).embed_threads >= 1
    with pytest.raises(ValueError):
        Embedder(PACKAGED_MODEL, backend="tensorflow")
