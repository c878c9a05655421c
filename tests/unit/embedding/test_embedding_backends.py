"""The exported backends (ONNX Runtime, OpenVINO) and precisions against torch fp32: the same vectors
for every exact precision, int8 recorded as a different embedding, an export made once and reused,
torch as the fallback, the candidates a setting allows, and length batching in input order (the measured
choice of 'auto': test_choice.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from patientinsight.embedding import encoder
from patientinsight.embedding import onnx as onnx_export
from patientinsight.embedding.encoder import Embedder, length_batches, make_embedder
from patientinsight.embedding.hardware import candidates, forced
from patientinsight.embedding.identity import same_embedding
from patientinsight.embedding.model import PACKAGED_MODEL
from patientinsight.embedding.tokens import UnsupportedModel, model_head
from patientinsight.settings import Settings

REAL_TEXTS = 40  # truncated at 256 tokens: a few seconds per backend on two cores


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(PACKAGED_MODEL, strategy="truncate", backend="torch", precision="fp32")


def started(backend: str, precision: str, cache_dir: Path) -> Embedder:
    embedder = Embedder(PACKAGED_MODEL, strategy="truncate", backend=backend, precision=precision, cache_dir=cache_dir)
    # not the torch fallback: the comparisons would be vacuous
    assert (embedder.active.backend, embedder.active.precision) == (backend, precision)
    return embedder


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir: Path) -> Embedder:
    return started("onnx", "fp32", cache_dir)


# Every exact pair; bf16 only where the CPU computes it natively (elsewhere it is emulated and never chosen).
EXACT = [("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("torch", "bf16")]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.mark.realdata
@pytest.mark.parametrize(("backend", "precision"), EXACT)
def test_exact_backends_agree_with_torch_on_real_records(
    backend: str, precision: str, real_data_dir: Path, torch_embedder: Embedder, cache_dir: Path
) -> None:
    texts = (
        pd.read_csv(real_data_dir / "PMC-Patients-sample-1000.csv", nrows=REAL_TEXTS)["patient"].astype(str).tolist()
    )
    assert len(texts) == REAL_TEXTS
    embedder = started(backend, precision, cache_dir)
    expected, got = torch_embedder.encode(texts), embedder.encode(texts)
    assert got.shape == expected.shape == (REAL_TEXTS, 384) and got.dtype == np.float32
    assert cosines(expected, got).min() >= 0.999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert same_embedding(torch_embedder.describe(), embedder.describe())  # switching re-embeds nothing


@pytest.mark.realdata
def test_int8_is_close_but_a_different_embedding(
    real_data_dir: Path, torch_embedder: Embedder, cache_dir: Path
) -> None:
    texts = pd.read_csv(real_data_dir / "PMC-Patients-sample-1000.csv", nrows=REAL_TEXTS)["patient"].astype(str)
    int8 = started("openvino", "int8", cache_dir)
    agreement = cosines(torch_embedder.encode(texts.tolist()), int8.encode(texts.tolist()))
    assert 0.95 < agreement.min() < 0.999  # quantized: near, but not the fp32 vectors
    described = int8.describe()
    assert (described["precision"], described["numerics"]) == ("int8", "int8")
    assert not same_embedding(torch_embedder.describe(), described)
    assert not same_embedding(described, torch_embedder.describe())
    # calibrated on generated case reports, converted once: a second embedder reuses the model
    assert len(list(cache_dir.glob("*.openvino-int8-*/model.xml"))) == 1


def test_queries_are_encoded_as_the_version_was(torch_embedder: Embedder, cache_dir: Path) -> None:
    int8 = started("openvino", "int8", cache_dir)
    exact = started("openvino", "fp32", cache_dir)
    for_int8 = exact.for_version(int8.describe())
    assert (for_int8.active.backend, for_int8.active.precision) == ("openvino", "int8")
    assert exact.for_version(int8.describe()) is for_int8  # made once
    assert exact.for_version(torch_embedder.describe()) is exact  # the same numerics: itself
    assert int8.for_version(exact.describe()).precision == "fp32"
    query = "fever and cough in a child"
    assert np.allclose(for_int8.embed_query(query), int8.embed_query(query), atol=1e-6)


def test_versions_from_before_precisions_were_recorded(torch_embedder: Embedder) -> None:
    old = {k: v for k, v in torch_embedder.describe().items() if k not in ("backend", "precision", "numerics")}
    assert same_embedding(old, torch_embedder.describe())
    assert not same_embedding({**old, "quantize": "int8"}, torch_embedder.describe())


def test_the_candidates_follow_the_cpu_and_the_settings() -> None:
    zen4 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
    avx2 = frozenset({"avx2", "fma"})
    every = candidates("auto", "auto", zen4)
    # every installed backend and precision, int8 included (NNCF installed here)
    assert set(every) == {
        ("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"),
        ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
    }  # fmt: skip
    # no bf16 instructions: bf16 would be emulated, so it is no candidate; int8 stays (AVX2 has int8 kernels)
    assert set(candidates("auto", "auto", avx2)) == {
        ("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")
    }  # fmt: skip
    assert candidates("onnx", "auto", zen4) == [("onnx", "fp32"), ("onnx", "int8")]  # no bf16 CPU kernels
    assert candidates("auto", "int8", avx2) == [("onnx", "int8"), ("openvino", "int8")]
    assert candidates("openvino", "bf16", avx2) == [("openvino", "bf16")]  # both set: kept as set
    # both set: nothing to measure; one set: measured among the pairs that fit it
    kept = forced("openvino", "int8")
    assert kept is not None and kept.pair == ("openvino", "int8") and "set in the settings" in kept.line()
    assert forced("auto", "auto") is None and forced("openvino", "auto") is None
    with pytest.raises(ValueError, match="not available with backend 'onnx'"):
        forced("onnx", "bf16")
    with pytest.raises(ValueError, match="not available with backend 'torch'"):
        forced("torch", "int8")


def test_queries_agree_and_rank_alike(torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    query = "fever and cough in a child"
    assert float(torch_embedder.embed_query(query) @ onnx_embedder.embed_query(query)) > 0.999
    docs = onnx_embedder.encode(["a child with cough and fever", "invoice overdue"])
    assert docs[0] @ onnx_embedder.embed_query(query) > docs[1] @ onnx_embedder.embed_query(query)


def test_switching_backend_does_not_force_re_embedding(torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    assert same_embedding(torch_embedder.describe(), onnx_embedder.describe())
    assert onnx_embedder.describe()["backend"] == "onnx"  # recorded, not compared


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
        started("onnx", "fp32", cache_dir)  # asserts that it really runs on ONNX
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
    fallback = Embedder(PACKAGED_MODEL, strategy="truncate", backend="openvino", precision="bf16", cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="patientinsight.embedding.encoder"):
        vectors = fallback.encode(["fever and cough in a child", "invoice overdue"])
    assert (fallback.active.backend, fallback.active.precision) == ("torch", "fp32")
    assert "falling back to torch" in caplog.text and "exporter exploded" in caplog.text
    assert "embedding backend torch fp32 on cpu: openvino bf16 failed" in caplog.text  # the one line of the choice
    assert fallback.describe()["precision"] == "fp32"  # the version records what really encoded
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


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_length_batching_returns_vectors_in_input_order(backend: str, cache_dir: Path, onnx_embedder: Embedder) -> None:
    words = ["fever", "cough", "rash", "seizure", "anaemia", "fracture", "jaundice", "sepsis"]
    texts = [" ".join(words[: 1 + (i * 5) % 8] * (1 + (i * 7) % 9)) + f" case {i}" for i in range(11)]
    assert len({len(t) for t in texts}) > 5  # lengths really differ, so sorting reorders them
    embedder = Embedder(
        PACKAGED_MODEL, strategy="truncate", batch_size=3, backend=backend, precision="fp32", cache_dir=cache_dir
    )
    together = embedder.encode(texts, progress_every=7)  # two sort windows
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    assert cosines(together, alone).min() > 0.9999
    assert embedder.active_backend == backend


def test_settings_choose_backend_and_threads(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, embedding_backend="torch", embedding_precision="bf16", embed_threads=1)
    built = make_embedder(settings)
    assert (built.backend, built.requested.precision, built.threads) == ("torch", "bf16", 1)
    assert Settings(home=tmp_path, model_cache_dir=None).model_cache == tmp_path / "models"
    assert make_embedder(Settings(home=tmp_path, model_cache_dir=tmp_path / "cache")).cache_dir == tmp_path / "cache"
    assert Settings(home=tmp_path).embed_threads >= 1
    with pytest.raises(ValueError):
        Embedder(PACKAGED_MODEL, backend="tensorflow")


def test_int8_quantization_keeps_the_log_readable(
    onnx_embedder: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime's quantizer logs an INFO line per tensor on the root logger: none of them reaches the log
    (its warnings do), and the root logger takes INFO records again afterwards."""
    exported = onnx_export.export_path(onnx_embedder.cache_dir, PACKAGED_MODEL, onnx_embedder.model)
    assert exported.exists()
    with caplog.at_level(logging.INFO):
        quantized = onnx_export.quantize_onnx(exported, tmp_path / "int8.onnx")
        logging.info("after the quantizer")
    assert quantized.stat().st_size > 0
    infos = [r.getMessage() for r in caplog.records if r.name == "root" and r.levelno < logging.WARNING]
    assert infos == ["after the quantizer"]
