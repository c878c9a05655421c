"""The measured choice of 'auto': the candidates a setting allows, the round-robin and the quality rule
on fake encoders, and on the real candidates (their real vectors) with a faked clock: a slow backend
loses, vectors that break the bound are refused, the choice is logged, cached and read back."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patientinsight.embedding import choice, measure, quality
from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.hardware import Pair, candidates, forced
from patientinsight.embedding.measure import Row, decide, round_robin
from patientinsight.embedding.model import PACKAGED_MODEL

ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
AVX2_ONLY = frozenset({"avx2", "fma"})


def test_candidates_follow_the_settings_not_a_table_of_flags() -> None:
    # int8 is a candidate with or without VNNI: measured, not assumed
    assert ("openvino", "int8") in candidates("auto", "auto", AVX2_ONLY)
    assert ("onnx", "int8") in candidates("auto", "auto", AVX2_ONLY)
    # bf16 only where the CPU computes it (elsewhere it is emulated or silently fp32)
    assert not [p for p in candidates("auto", "auto", AVX2_ONLY) if p[1] == "bf16"]
    assert {("torch", "bf16"), ("openvino", "bf16")} <= set(candidates("auto", "auto", ZEN4))
    assert candidates("onnx", "auto", ZEN4) == [("onnx", "fp32"), ("onnx", "int8")]
    assert candidates("auto", "fp32", ZEN4) == [("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32")]
    assert candidates("auto", "bf16", AVX2_ONLY) == [("torch", "bf16"), ("openvino", "bf16")]  # set: kept
    assert candidates("openvino", "int8", AVX2_ONLY) == [("openvino", "int8")]
    chosen = forced("torch", "bf16")
    assert chosen is not None and chosen.pair == ("torch", "bf16") and "set in the settings" in chosen.reason
    with pytest.raises(ValueError, match="not available with backend 'onnx'"):
        candidates("onnx", "bf16", ZEN4)
    with pytest.raises(ValueError, match="not available with backend 'torch'"):
        candidates("torch", "int8", ZEN4)
    with pytest.raises(ValueError, match="unknown embedding backend"):
        candidates("tensorflow", "auto", ZEN4)


def unit_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near(vectors: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The same vectors moved by noise of this size (cosine about 1 - noise^2 / 2)."""
    moved = vectors + rng.normal(size=vectors.shape).astype(np.float32) * noise / np.sqrt(vectors.shape[1])
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def fake_encoders(
    outputs: dict[Pair, np.ndarray], cost_s: dict[Pair, float]
) -> tuple[dict[Pair, measure.Encode], Callable[[], float]]:
    """Encoders that return fixed vectors and advance a fake clock by their cost per check set."""
    now = [0.0]

    def encoder(pair: Pair, n: int) -> measure.Encode:
        def encode(texts: Sequence[str]) -> np.ndarray:
            now[0] += cost_s[pair] * len(texts) / n
            return np.tile(outputs[pair], (len(texts) // n, 1))

        return encode

    n = len(next(iter(outputs.values())))
    return {pair: encoder(pair, n) for pair in outputs}, lambda: now[0]


def test_the_fastest_pair_within_the_quality_rule_is_chosen() -> None:
    rng = np.random.default_rng(0)
    texts = [f"text {i}" for i in range(8)]
    exact = unit_rows(len(texts), rng)
    outputs = {
        ("torch", "fp32"): exact,
        ("openvino", "int8"): near(exact, 0.08, rng),  # cosine about 0.997: as close as the studied int8
        ("onnx", "int8"): near(exact, 0.5, rng),  # cosine about 0.88: breaks the bound
        ("openvino", "fp32"): exact,
    }
    cost_s = {("torch", "fp32"): 1.0, ("openvino", "int8"): 0.4, ("onnx", "int8"): 0.2, ("openvino", "fp32"): 3.0}
    encoders, clock = fake_encoders(outputs, cost_s)
    rows = round_robin(encoders, texts, rounds=3, clock=clock, settle=lambda s: None)
    by_pair = {row.pair: row for row in rows}
    assert [row.pair for row in rows][:2] == [("onnx", "int8"), ("openvino", "int8")]  # fastest first
    assert not by_pair[("onnx", "int8")].allowed and "refused" in by_pair[("onnx", "int8")].note
    assert by_pair[("openvino", "int8")].allowed and by_pair[("torch", "fp32")].note == "the fp32 reference"
    # a pair that cannot win is not measured again; a refused pair neither
    assert by_pair[("openvino", "fp32")].rounds == 1 and by_pair[("onnx", "int8")].rounds == 1
    assert by_pair[("openvino", "int8")].rounds == 3
    pair, why = decide(rows)
    assert pair == ("openvino", "int8")
    assert "refused by the quality rule: onnx int8" in why
    assert "REFUSED" in measure.table_text(rows) and "text 0" not in measure.table_text(rows)


def test_the_rule_refuses_int8_vectors_beyond_the_studied_bound() -> None:
    ok, _ = quality.verdict("int8", quality.Agreement(quality.INT8_MIN_COSINE, quality.INT8_MEAN_COSINE))
    assert ok
    low, why = quality.verdict("int8", quality.Agreement(quality.INT8_MIN_COSINE - 0.001, 0.999))
    assert not low and "lowest cosine" in why
    drift, why = quality.verdict("int8", quality.Agreement(0.999, quality.INT8_MEAN_COSINE - 0.001))
    assert not drift and "mean cosine" in why
    # the exact class is held to its own, tighter bound: an int8-like bf16 would be refused
    assert not quality.verdict("bf16", quality.Agreement(0.995, 0.998))[0]
    assert quality.verdict("fp32", quality.Agreement(0.9999, 1.0))[0]


def test_the_key_measures_again_on_another_machine_or_library(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs: list[Pair] = [("torch", "fp32"), ("onnx", "int8")]
    spec = choice.key_spec(PACKAGED_MODEL, pairs, 2, 32)
    assert {"cpu", "flags", "threads", "versions", "isa_caps", "candidates", "rule"} <= set(spec)
    assert spec["versions"]["torch"] and spec["versions"]["onnxruntime"]
    path = choice.cache_file(Path("/cache"), spec)
    assert path == choice.cache_file(Path("/cache"), choice.key_spec(PACKAGED_MODEL, pairs, 2, 32))
    assert path != choice.cache_file(Path("/cache"), choice.key_spec(PACKAGED_MODEL, pairs, 1, 32))
    other_library = {**spec, "versions": {**spec["versions"], "openvino": "0.0"}}
    assert path != choice.cache_file(Path("/cache"), other_library)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # an emulated CPU is another machine
    assert path != choice.cache_file(Path("/cache"), choice.key_spec(PACKAGED_MODEL, pairs, 2, 32))


@pytest.fixture
def faked_clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The real candidates encode the real check texts; only the clock is faked: `cost[pair]` seconds per
    check set (default 1) and `per_call[pair]` seconds on every call (default 0), and `distort[pair]` may
    move a pair's vectors. Nothing here depends on time."""
    plan: dict[str, Any] = {"cost": {}, "per_call": {}, "distort": {}, "measured": 0}
    real = measure.round_robin

    def timed(encoders: dict[Pair, measure.Encode], texts: Sequence[str], **kwargs: Any) -> list[Row]:
        now = [0.0]
        plan["measured"] += 1

        def wrapped(pair: Pair, encode: measure.Encode) -> measure.Encode:
            def run(batch: Sequence[str]) -> np.ndarray:
                now[0] += plan["cost"].get(pair, 1.0) * len(batch) / len(texts) + plan["per_call"].get(pair, 0.0)
                return plan["distort"].get(pair, lambda v: v)(encode(batch))

            return run

        fakes = {pair: wrapped(pair, encode) for pair, encode in encoders.items()}
        return real(fakes, texts, clock=lambda: now[0], settle=lambda s: None)

    monkeypatch.setattr(measure, "round_robin", timed)
    return plan


@pytest.fixture
def private_cache(model_cache: Path, tmp_path: Path) -> Path:
    """The session's prepared models (links), without its cached choices."""
    cache = tmp_path / "models"
    cache.mkdir()
    for entry in model_cache.iterdir():
        if entry.name != choice.FOLDER and not entry.name.startswith("."):
            (cache / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return cache


def test_a_slow_backend_loses_and_the_choice_is_logged_and_cached(
    faked_clock: dict[str, Any], private_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    faked_clock["cost"] = {("torch", "fp32"): 1.0, ("onnx", "fp32"): 0.5, ("openvino", "fp32"): 5.0}
    with caplog.at_level(logging.INFO, logger="patientinsight.embedding"):
        embedder = Embedder(PACKAGED_MODEL, "truncate", precision="fp32", cache_dir=private_cache)
        assert embedder.setting == ("auto", "fp32")
        assert (embedder.active.backend, embedder.active.precision) == ("onnx", "fp32")
    measured_line = next(r.getMessage() for r in caplog.records if "embedding choice measured" in r.getMessage())
    assert "torch fp32" in measured_line and "openvino fp32" in measured_line and "=> onnx fp32" in measured_line
    assert "measured on this machine" in embedder.active.line()
    table = {row.pair: row for row in embedder.measured().rows}
    assert table[("openvino", "fp32")].texts_per_s < table[("torch", "fp32")].texts_per_s
    assert all(row.allowed and row.cosine_min > 0.999 for row in table.values())  # every real fp32 runtime
    cached = list((private_cache / choice.FOLDER).glob("*.json"))
    assert len(cached) == 1 and faked_clock["measured"] == 1

    # Another process on this machine reads the file: measuring again would give another answer here.
    faked_clock["cost"] = {("torch", "fp32"): 0.1}
    choice._memo.clear()
    again = Embedder(PACKAGED_MODEL, "truncate", precision="fp32", cache_dir=private_cache)
    assert again.requested.pair == ("onnx", "fp32") and faked_clock["measured"] == 1
    assert not again.measured().fresh
    # Other settings (threads) are another key: measured, and now the other backend wins.
    one_thread = Embedder(PACKAGED_MODEL, "truncate", precision="fp32", threads=1, cache_dir=private_cache)
    assert one_thread.requested.pair == ("torch", "fp32") and faked_clock["measured"] == 2
    assert len(list((private_cache / choice.FOLDER).glob("*.json"))) == 2


def test_queries_take_the_pair_fastest_on_one_query_of_the_versions_numerics(
    faked_clock: dict[str, Any], private_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # torch: fastest on documents, but a fixed cost on every call makes it the slowest on one query
    faked_clock["cost"] = {("torch", "fp32"): 0.5, ("onnx", "fp32"): 1.0, ("openvino", "fp32"): 2.0}
    faked_clock["per_call"] = {("torch", "fp32"): 0.05}
    embedder = Embedder(PACKAGED_MODEL, "truncate", precision="fp32", cache_dir=private_cache)
    assert embedder.requested.pair == ("torch", "fp32")
    rows = {row.pair: row for row in embedder.measured().rows}
    assert rows[("onnx", "fp32")].query_ms < rows[("openvino", "fp32")].query_ms < rows[("torch", "fp32")].query_ms
    assert all(row.rounds == 1 or row.query_ms is not None for row in rows.values())
    with caplog.at_level(logging.INFO, logger="patientinsight.embedding"):
        for_queries = embedder.for_version(embedder.describe())
    assert for_queries.requested.pair == ("onnx", "fp32") and for_queries is embedder.for_version(embedder.describe())
    assert any("torch fp32: encoded with onnx fp32" in r.getMessage() for r in caplog.records)
    assert "queries of a torch fp32 version: fastest on one query of the fp32 class" in for_queries.active.line()
    query = "fever and cough in a child"
    assert float(for_queries.embed_query(query) @ embedder.embed_query(query)) > 0.999  # the same class
    # int8 documents keep their own pair for queries: another runtime quantizes the model differently
    int8_version = {**embedder.describe(), "backend": "openvino", "precision": "int8", "numerics": "int8"}
    assert measure.query_pair(list(rows.values()), ("openvino", "int8"))[0] == ("openvino", "int8")
    # a backend set in the settings encodes the queries of its own numerics itself
    set_torch = Embedder(PACKAGED_MODEL, "truncate", backend="torch", precision="fp32", cache_dir=private_cache)
    assert set_torch.for_version(embedder.describe()) is set_torch
    assert set_torch.for_version(int8_version).requested.pair == ("openvino", "int8")


def test_vectors_that_break_the_bound_are_refused(faked_clock: dict[str, Any], private_cache: Path) -> None:
    rng = np.random.default_rng(1)
    faked_clock["cost"] = {("openvino", "int8"): 0.1, ("openvino", "fp32"): 1.0, ("openvino", "bf16"): 2.0}
    faked_clock["distort"] = {("openvino", "int8"): lambda v: near(v, 0.6, rng)}  # cosine about 0.83
    embedder = Embedder(PACKAGED_MODEL, "truncate", backend="openvino", cache_dir=private_cache)
    assert embedder.requested.pair == ("openvino", "fp32")  # int8 was fastest, and refused
    rows = {row.pair: row for row in embedder.measured().rows}
    assert not rows[("openvino", "int8")].allowed and rows[("openvino", "int8")].cosine_min < quality.INT8_MIN_COSINE
    assert "refused by the quality rule: openvino int8" in embedder.requested.reason

    # The real int8 vectors (not distorted) are within the studied bound: allowed, and chosen when fastest.
    faked_clock["distort"] = {}
    choice._memo.clear()
    real_int8 = Embedder(PACKAGED_MODEL, "truncate", backend="openvino", cache_dir=private_cache)
    found = real_int8.measured(again=True)
    assert found.fresh and found.choice.pair == ("openvino", "int8")
    row = next(r for r in found.rows if r.pair == ("openvino", "int8"))
    assert quality.INT8_MIN_COSINE <= row.cosine_min < 0.999  # close to fp32, and not the fp32 vectors
    assert real_int8.describe()["numerics"] == "int8"  # the version records what encoded


def test_embedding_check_prints_the_table(model_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from patientinsight import cli

    assert cli.main(["embedding-check"]) == 0  # the session's prepared choice: read, not measured
    out = capsys.readouterr().out
    assert out.startswith("auto: ") and "backend   precision  texts/s" in out and "the fp32 reference" in out
    assert cli.main(["embedding-check", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert not found["fresh"] and found["cache"].startswith(str(model_cache))
    assert {row["backend"] for row in found["table"]} >= {"torch"} and found["settings"].startswith("embedding ")
