from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.types import EmbeddedBatch, Filters


def records(uids: list[str], ages: list[float | None] | None = None, sexes: list[str] | None = None) -> pd.DataFrame:
    n = len(uids)
    return pd.DataFrame({
        "uid": uids, "pmid": ["1"] * n, "title": ["t"] * n, "text": [f"text {u}" for u in uids],
        "age_years": ages or [40.0] * n, "sex": sexes or ["F"] * n, "pub_date": [None] * n,
        "similar_patients": ["{}"] * n, "relevant_articles": ["{}"] * n, "content_hash": [f"h-{u}" for u in uids],
    })  # fmt: skip


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def build(index: EmbeddedIndex, base: str | None, batch: EmbeddedBatch | None = None, deletes: list[str] = ()) -> str:
    builder = index.builder(base, {"dim": 3, "model": "test"})
    if batch is not None:
        builder.upsert(batch)
    builder.delete(list(deletes))
    return builder.commit()


@pytest.fixture
def index(tmp_path: Path) -> EmbeddedIndex:
    return EmbeddedIndex(tmp_path / "index", keep_versions=2)


def test_search_orders_by_best_chunk(index: EmbeddedIndex) -> None:
    vectors = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0.9, 0.1, 0), unit(0, 0, 1)])
    # a owns chunks 0-1, b owns chunk 2, c owns chunk 3
    version = build(index, None, EmbeddedBatch(records(["a", "b", "c"]), vectors, np.array([2, 1, 1])))
    reader = index.open(version)
    hits = reader.search(unit(0, 1, 0), k=3)
    assert [h.uid for h in hits] == ["a", "b", "c"]
    assert hits[0].best_chunk == 1 and hits[0].score == pytest.approx(1.0)
    assert [h.uid for h in reader.search(unit(1, 0, 0), k=2)] == ["a", "b"]
    assert reader.count() == 3
    assert reader.hashes() == {"a": "h-a", "b": "h-b", "c": "h-c"}


def test_filters(index: EmbeddedIndex) -> None:
    vectors = np.stack([unit(1, 0, 0), unit(1, 0.1, 0), unit(1, 0.2, 0), unit(1, 0.3, 0)])
    batch = EmbeddedBatch(records(["a", "b", "c", "d"], ages=[5.0, 30.0, 70.0, None], sexes=["M", "F", "F", "M"]),
                          vectors, np.ones(4, dtype=np.int64))  # fmt: skip
    reader = index.open(build(index, None, batch))
    q = unit(1, 0, 0)
    assert [h.uid for h in reader.search(q, 10, Filters(sex="f"))] == ["b", "c"]
    assert [h.uid for h in reader.search(q, 10, Filters(age_min=18))] == ["b", "c"]
    assert [h.uid for h in reader.search(q, 10, Filters(age_max=40, sex="M"))] == ["a"]
    assert reader.search(q, 10, Filters(age_min=90)) == []


def test_upsert_replaces_and_delete_removes(index: EmbeddedIndex) -> None:
    first = build(index, None, EmbeddedBatch(records(["a", "b"]), np.stack([unit(1, 0, 0), unit(0, 1, 0)]),
                                             np.ones(2, dtype=np.int64)))  # fmt: skip
    changed = records(["b"])
    changed["content_hash"] = ["h-b2"]
    second = build(index, first, EmbeddedBatch(changed, np.stack([unit(0, 0, 1)]), np.ones(1, dtype=np.int64)), ["a"])
    reader = index.open(second)
    assert reader.hashes() == {"b": "h-b2"}
    assert reader.search(unit(0, 0, 1), 1)[0].uid == "b"
    assert index.open(first).count() == 2  # versions are immutable


def test_publish_switches_pointer_and_prunes(index: EmbeddedIndex) -> None:
    batch = EmbeddedBatch(records(["a"]), np.stack([unit(1, 0, 0)]), np.ones(1, dtype=np.int64))
    versions = []
    for _ in range(4):
        versions.append(build(index, versions[-1] if versions else None, batch))
        index.publish(versions[-1])
        assert index.published() == versions[-1]
    remaining = sorted(p.name for p in index.versions_dir.iterdir())
    assert remaining == versions[-2:]
    with pytest.raises(FileNotFoundError):
        index.publish("v-missing")


def test_readers_see_whole_versions_while_publishing(index: EmbeddedIndex) -> None:
    sizes = {}
    base = None
    for n in (1, 2, 3):
        uids = [f"u{i}" for i in range(n)]
        base = build(
            index,
            None,
            EmbeddedBatch(records(uids), np.tile(unit(1, 0, 0), (n, 1)), np.ones(n, dtype=np.int64)),
        )
        sizes[base] = n
    index.keep_versions = 10
    errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            version = index.published()
            if version is None:
                continue
            reader = index.open(version)
            if reader.count() != sizes[version] or len(reader.search(unit(1, 0, 0), 10)) != sizes[version]:
                errors.append(version)

    thread = threading.Thread(target=read)
    thread.start()
    for _ in range(30):
        for version in sizes:
            index.publish(version)
    stop.set()
    thread.join()
    assert errors == []


def test_batch_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="add up"):
        EmbeddedBatch(records(["a"]), np.zeros((2, 3), np.float32), np.array([1]))
    with pytest.raises(ValueError, match="at least one"):
        EmbeddedBatch(records(["a", "b"]), np.zeros((2, 3), np.float32), np.array([2, 0]))


def test_manifest_records_counts(index: EmbeddedIndex) -> None:
    version = build(index, None, EmbeddedBatch(records(["a"]), np.stack([unit(1, 0, 0)]), np.ones(1, dtype=np.int64)))
    manifest = json.loads((index.versions_dir / version / "manifest.json").read_text())
    assert manifest["records"] == 1 and manifest["vectors"] == 1 and manifest["parent"] is None
