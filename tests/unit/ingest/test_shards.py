"""Embedding in shards (what patient_ingest maps one task over), without a scheduler: how the plan is
cut, that shards add up to the unsharded result, and that a missing shard stops the build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from patientinsight.embedding import quality
from patientinsight.embedding.encoder import Embedder, make_embedder
from patientinsight.index.factory import make_index
from patientinsight.ingest.shards import embed_shard, embed_summary, plan_shards
from patientinsight.ingest.steps import build_version, plan_changes, validate_source
from patientinsight.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def embed_planned(run_dir: Path, embedder: Embedder, shard_size: int) -> dict[str, Any]:
    """Every shard in turn, as the command line runs them."""
    for shard in plan_shards(run_dir, shard_size):
        embed_shard(run_dir, embedder, shard)
    return embed_summary(run_dir)


def planned_run(settings: Settings, source: Path, name: str, chunk_rows: int = 10) -> Path:
    """A run folder validated in parts of `chunk_rows` rows and planned against the empty index."""
    run_dir = settings.runs_dir / name
    run_dir.mkdir(parents=True)
    validate_source(str(source), run_dir, chunk_rows, max_quarantine_ratio=0.5)
    embedding = make_embedder(settings).describe()
    plan_changes(run_dir, make_index(settings), embedding, full_refresh=False)
    return run_dir


def test_shards_cover_the_plan_once_and_name_the_parts_they_read(settings: Settings, sample_csv: Path) -> None:
    run_dir = planned_run(settings, sample_csv, "cut")
    plan = json.loads((run_dir / "plan.json").read_text())
    shards = plan_shards(run_dir, 7)
    assert [s["shard"] for s in shards] == list(range(-(-len(plan["embed"]) // 7)))
    assert all(0 < s["stop"] - s["start"] <= 7 for s in shards)
    assert [u for s in shards for u in plan["embed"][s["start"] : s["stop"]]] == plan["embed"]
    for shard in shards:
        in_parts = set()
        for name in shard["parts"]:
            in_parts |= set(pd.read_parquet(run_dir / "records" / name, columns=["uid"])["uid"])
        assert set(plan["embed"][shard["start"] : shard["stop"]]) <= in_parts
        assert len(shard["parts"]) <= 2  # 7 records never span more than two parts of 10 rows
    with pytest.raises(ValueError, match="at least 1"):
        plan_shards(run_dir, 0)


def test_sharded_build_equals_the_unsharded_one(settings: Settings, sample_csv: Path) -> None:
    embedder = make_embedder(settings)
    embedding = embedder.describe()
    index = make_index(settings)
    versions = {}
    for name, shard_size in (("one", 10_000), ("many", 6)):
        run_dir = planned_run(settings, sample_csv, name)
        summary = embed_planned(run_dir, embedder, shard_size)
        assert summary["shards"] == (1 if name == "one" else -(-summary["embedded"] // 6))
        versions[name] = build_version(run_dir, index, embedding)["version"]
    one, many = index.open(versions["one"]), index.open(versions["many"])
    assert one.hashes() == many.hashes() and one.count() == summary["embedded"]
    order = list(one.hashes())
    assert list(many.hashes()) == order  # same records in the same order: the lexical index agrees too
    # The same vectors up to rounding (the project's bar for "the same embedding", 0.999), since shards batch
    # differently: in exact numerics a text's vector depends on its batch only through padding. int8 moves
    # more: ONNX Runtime's dynamic quantization (the measured default on AVX2-only CPUs) scales by the whole
    # batch, so a text in another batch is about as far as int8 is from fp32 (cosine 0.992 at least, seen on
    # the AVX2 EPYC), and no further than the studied int8 bound allows.
    cosines = (np.asarray(one.vectors) * np.asarray(many.vectors)).sum(axis=1)
    bar = quality.EXACT_MIN_COSINE if embedding["numerics"] == "fp32" else quality.INT8_MIN_COSINE
    assert cosines.min() > bar, (embedding["backend"], embedding["precision"])


def test_a_missing_shard_stops_the_build_and_a_retried_shard_completes_it(settings: Settings, sample_csv: Path) -> None:
    embedder = make_embedder(settings)
    index = make_index(settings)
    run_dir = planned_run(settings, sample_csv, "retry")
    shards = plan_shards(run_dir, 20)
    assert len(shards) == 3
    for shard in shards[:2]:  # the third shard's task failed
        embed_shard(run_dir, embedder, shard)
    with pytest.raises(FileNotFoundError, match="shard 2 has no vectors"):
        build_version(run_dir, index, embedder.describe())
    assert not index.versions_dir.exists() or not any(index.versions_dir.iterdir())  # nothing staged

    first = embed_shard(run_dir, embedder, shards[2])
    again = embed_shard(run_dir, embedder, shards[2])  # a retry after success: same files
    assert first["embedded"] == again["embedded"] == shards[2]["stop"] - shards[2]["start"]
    assert sorted(p.name for p in (run_dir / "embeddings").iterdir()) == [
        f"shard-{n:05d}.{ext}" for n in range(3) for ext in ("json", "npz")
    ]
    built = build_version(run_dir, index, embedder.describe())
    assert built["records"] == shards[-1]["stop"] == embed_summary(run_dir)["embedded"]


def test_nothing_to_embed_makes_no_shards(settings: Settings, sample_csv: Path) -> None:
    embedder = make_embedder(settings)
    index = make_index(settings)
    run_dir = planned_run(settings, sample_csv, "first")
    embed_planned(run_dir, embedder, 5000)
    index.publish(build_version(run_dir, index, embedder.describe())["version"])
    rerun = planned_run(settings, sample_csv, "unchanged")
    assert plan_shards(rerun, 5000) == []
    assert embed_summary(rerun) == {
        "embedded": 0,
        "chunks": 0,
        "shards": 0,
        "seconds": 0,
        "records_per_s": 0.0,
    }
    assert build_version(rerun, index, embedder.describe())["version"] == index.published()


def test_a_shard_whose_parts_lack_its_records_fails_clearly(settings: Settings, sample_csv: Path) -> None:
    run_dir = planned_run(settings, sample_csv, "mismatch")
    first, *_, last = plan_shards(run_dir, 20)
    wrong = {**first, "parts": last["parts"][-1:]}  # the first shard's records are not in the last part
    with pytest.raises(RuntimeError, match=r"shard 0: \d+ planned records are not in \['part-"):
        embed_shard(run_dir, make_embedder(settings), wrong)
    assert not list((run_dir / "embeddings").glob("shard-00000.*"))  # nothing written for it
