"""One contract for every vector index: the embedded index on local disk, and the Pinecone index
against the Pinecone stand-in (tests/pinecone_standin.py) through the official SDK over HTTP.
Below the contract: what only Pinecone can do wrong (throttling, outages, credentials, its one retry
layer), through the pipeline's own steps."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from patientinsight.airflow.connections import pinecone_credentials
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.factory import make_index
from patientinsight.index.pinecone import PineconeIndex
from patientinsight.index.pinecone_keys import vector_ids, version_keys
from patientinsight.index.pinecone_reader import PineconeReader
from patientinsight.index.pinecone_support import PineconeIndexError
from patientinsight.index.types import (
    META_COLUMNS,
    EmbeddedBatch,
    Filters,
    IndexReader,
    VectorIndex,
    VersionBuilder,
)
from patientinsight.ingest.run import run_ingest
from patientinsight.ingest.steps import build_version, publish_version
from patientinsight.records.columns import MAX_UID_CHARS
from patientinsight.settings import Settings
from tests.helpers import commit_version
from tests.pinecone_standin import PineconeStandIn, standin_options
from tests.protocols import protocol_drift

MANIFEST = {"dim": 3, "model": "test"}


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


@dataclass
class Backend:
    index: EmbeddedIndex | PineconeIndex
    standin: PineconeStandIn | None

    def stored_versions(self) -> set[str]:
        """The versions whose vectors the backend still holds: folders; or, in Pinecone, the kept versions
        whose every vector is there, and "unreferenced" when it holds a vector that none of them names."""
        if self.standin is None:
            return {p.name for p in self.index.versions_dir.iterdir() if list(p.glob("segments/*/vectors.npy"))}
        (stored,) = self.standin.indexes.values()
        held = {vid for rows in stored.namespaces.values() for vid in rows}
        named = {p.name: set(vector_ids(version_keys(p))) for p in self.index.versions_dir.iterdir()}
        whole = {name for name, ids in named.items() if ids <= held}
        return whole | ({"unreferenced"} if held - set().union(*named.values()) else set())


@pytest.fixture(params=["embedded", "pinecone"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "embedded":
        yield Backend(EmbeddedIndex(tmp_path / "index", keep_versions=2), None)
        return
    standin: PineconeStandIn = request.getfixturevalue("standin")  # the one stand-in fixture (conftest.py)
    options = standin_options(standin.url, standin.api_key, batch_size=2)
    yield Backend(PineconeIndex(tmp_path / "index", options, keep_versions=2), standin)


def batch(
    uids: list[str], vectors: list[np.ndarray], counts: list[int] | None = None, **columns: list
) -> EmbeddedBatch:
    frame = records(uids, columns.get("ages"), columns.get("sexes"))
    return EmbeddedBatch(frame, np.stack(vectors), np.array(counts or [1] * len(uids), dtype=np.int64))


build = partial(commit_version, manifest=MANIFEST)


# -- the contract ---------------------------------------------------------------------------------------


def test_implements_the_protocols(backend: Backend) -> None:
    """At run time what index.conformance has mypy check statically: index, reader and builder have
    every member their Protocol lists, with the Protocol's signatures."""
    index = backend.index
    builder = index.builder(None, MANIFEST)
    reader = index.open(build(index, None, batch(["a"], [unit(1, 0, 0)])))
    assert isinstance(index, VectorIndex) and isinstance(builder, VersionBuilder) and isinstance(reader, IndexReader)
    for implementation, protocol in ((index, VectorIndex), (builder, VersionBuilder), (reader, IndexReader)):
        assert protocol_drift(implementation, protocol) == []


def test_the_protocol_check_sees_a_drifted_signature() -> None:
    class Drifted:
        def version(self) -> str: ...  # a method where the Protocol has a property

        def publish(self, name: str) -> None: ...  # renamed parameter

        def manifest(self, version: str) -> dict[str, str]: ...  # another return type

        def open(self, version: str, fast: bool = True) -> IndexReader: ...  # an extra parameter

    drift = "\n".join(protocol_drift(Drifted(), VectorIndex))
    assert "published: missing" in drift and "builder: missing" in drift
    assert "publish: parameters" in drift and "open: parameters" in drift and "manifest: annotations" in drift
    assert "where the Protocol has a property" in "\n".join(protocol_drift(Drifted(), IndexReader))


def test_batch_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="add up"):
        EmbeddedBatch(records(["a"]), np.zeros((2, 3), np.float32), np.array([1]))
    with pytest.raises(ValueError, match="at least one"):
        EmbeddedBatch(records(["a", "b"]), np.zeros((2, 3), np.float32), np.array([2, 0]))


def test_upsert_counts_hashes_and_top_k_order(backend: Backend) -> None:
    index = backend.index
    # a owns chunks 0-1, b owns chunk 2, c owns chunk 3
    version = build(
        index, None, batch(["a", "b", "c"], [unit(1, 0, 0), unit(0, 1, 0), unit(0.9, 0.1, 0), unit(0, 0, 1)], [2, 1, 1])
    )
    reader = index.open(version)
    assert reader.count() == 3
    assert reader.hashes() == {"a": "h-a", "b": "h-b", "c": "h-c"}
    hits = reader.search(unit(0, 1, 0), k=3)
    assert [h.uid for h in hits] == ["a", "b", "c"]
    assert hits[0].best_chunk == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score == pytest.approx(float(unit(0.9, 0.1, 0) @ unit(0, 1, 0)), abs=1e-5)
    assert [h.uid for h in reader.search(unit(1, 0, 0), k=2)] == ["a", "b"]
    assert reader.search(unit(1, 0, 0), k=0) == []
    assert reader.records(["c", "a"])["uid"].tolist() == ["c", "a"]
    some = reader.records(["c", "missing", "a"], ["content_hash"])  # only the columns asked, uid among them
    assert list(some.columns) == ["uid", "content_hash"] and some["uid"].tolist() == ["c", "missing", "a"]
    assert some["content_hash"].tolist()[::2] == ["h-c", "h-a"] and pd.isna(some["content_hash"][1])
    held = reader.records(["c", "a", "a"], ["content_hash", "uid"])  # every uid held: the direct path
    assert list(held.columns) == ["uid", "content_hash"] and list(held.index) == [0, 1, 2]
    assert held.to_dict("list") == {"uid": ["c", "a", "a"], "content_hash": ["h-c", "h-a", "h-a"]}
    assert reader.records([], ["content_hash"]).empty


def test_top_k_counts_records_not_chunks(backend: Backend) -> None:
    """One record's many chunks must not crowd the others out of the k best records."""
    many = [unit(1, 0.01 * i, 0) for i in range(30)]
    others = [unit(0.5, 1, 0), unit(0.3, 1, 0), unit(0, 0, 1)]
    reader = backend.index.open(build(backend.index, None, batch(["a", "b", "c", "d"], many + others, [30, 1, 1, 1])))
    hits = reader.search(unit(1, 0, 0), k=3)
    assert [h.uid for h in hits] == ["a", "b", "c"] and hits[0].best_chunk == 0
    best, chunks = reader.scores(unit(1, 0, 0))
    assert len(best) == 4 and len(chunks) == 33 and int(np.argmax(best)) == 0


def test_excluded_records_are_hidden_and_candidates_score_as_in_the_scan(backend: Backend) -> None:
    """The leave-one-out seam: `exclude` hides records from the dense search; a reranker's scores of
    a few records (`scores_at`) equal their scores in the full scan, best chunk included."""
    many = [unit(1, 0.01 * i, 0) for i in range(3)]
    others = [unit(0.5, 1, 0), unit(0.3, 1, 0), unit(0, 0, 1)]
    reader = backend.index.open(build(backend.index, None, batch(["a", "b", "c", "d"], many + others, [3, 1, 1, 1])))
    query = unit(1, 0.5, 0)
    assert [h.uid for h in reader.search(query, k=2, exclude={"a"})] == ["b", "c"]
    assert [h.uid for h in reader.search(query, k=4, exclude={"a", "zz"})] == ["b", "c", "d"]
    positions = np.array([3, 0, 2])
    best, _ = reader.scores(query)
    assert np.allclose(reader.scores_at(query, positions), best[positions], atol=1e-5)


def test_filters(backend: Backend) -> None:
    vectors = [unit(1, 0, 0), unit(1, 0.1, 0), unit(1, 0.2, 0), unit(1, 0.3, 0)]
    new = batch(["a", "b", "c", "d"], vectors, ages=[5.0, 30.0, 70.0, None], sexes=["M", "F", "F", "M"])
    reader = backend.index.open(build(backend.index, None, new))
    q = unit(1, 0, 0)
    assert [h.uid for h in reader.search(q, 10, Filters(sex="f"))] == ["b", "c"]
    assert [h.uid for h in reader.search(q, 10, Filters(age_min=18))] == ["b", "c"]  # unknown age fails
    assert [h.uid for h in reader.search(q, 10, Filters(age_min=18, age_max=40))] == ["b"]
    assert [h.uid for h in reader.search(q, 10, Filters(age_max=40, sex="M"))] == ["a"]
    assert [h.uid for h in reader.search(q, 1, Filters(sex="F"))] == ["b"]
    assert reader.search(q, 10, Filters(age_min=90)) == []
    assert [h.uid for h in reader.search(q, 10, Filters())] == ["a", "b", "c", "d"]


def test_update_and_delete_make_a_new_version(backend: Backend) -> None:
    index = backend.index
    first = build(index, None, batch(["a", "b", "c"], [unit(1, 0, 0), unit(0, 1, 0), unit(0, 1, 1)]))
    changed = batch(["b"], [unit(0, 0, 1)])
    changed.records["content_hash"] = ["h-b2"]
    second = build(index, first, changed, deletes=("a",))
    reader = index.open(second)
    assert reader.count() == 2
    assert reader.hashes() == {"b": "h-b2", "c": "h-c"}
    assert [h.uid for h in reader.search(unit(0, 0, 1), 2)] == ["b", "c"]
    assert reader.search(unit(0, 0, 1), 1)[0].score == pytest.approx(1.0, abs=1e-5)
    assert "a" not in {h.uid for h in reader.search(unit(1, 0, 0), 10)}
    # c was carried unchanged from the base: same vector, same score
    assert reader.search(unit(0, 1, 1), 1)[0].uid == "c"
    old = index.open(first)  # versions are immutable
    assert old.count() == 3 and old.hashes()["b"] == "h-b"
    assert old.search(unit(0, 1, 0), 1)[0].uid == "b"


def test_publish_switches_pointer_and_prunes(backend: Backend) -> None:
    index = backend.index
    assert index.published() is None
    versions: list[str] = []
    for i in range(4):
        new = batch([f"u{i}"], [unit(1, i, 0)])
        versions.append(build(index, versions[-1] if versions else None, new))
        index.publish(versions[-1])
        assert index.published() == versions[-1]
        assert (index.root / "CURRENT").read_text().strip() == versions[-1]
    assert sorted(p.name for p in index.versions_dir.iterdir()) == versions[-2:]
    assert backend.stored_versions() == set(versions[-2:])
    assert index.open(index.published()).count() == 4
    with pytest.raises(FileNotFoundError):
        index.publish("v-missing")
    assert index.published() == versions[-1]


def test_a_held_version_outlives_pruning_until_approved_or_rejected(backend: Backend) -> None:
    """The gate holds a worse version for a person; other runs publish meanwhile (keep_versions=1)."""
    index = backend.index
    index.versions.keep_versions = 1
    first = build(index, None, batch(["a"], [unit(1, 0, 0)]))
    index.publish(first)
    held = build(index, first, batch(["b"], [unit(0, 1, 0)]))
    index.hold(held)
    later = build(index, first, batch(["c"], [unit(0, 0, 1)]))
    index.publish(later)  # what a command-line ingest does while the approval waits
    assert index.versions.committed() == [held, later]
    assert backend.stored_versions() == {held, later}

    index.publish(held)  # approved: the version, its vectors and all, is there to publish
    assert index.published() == held and index.versions.committed() == [held]
    assert [h.uid for h in index.open(held).search(unit(0, 1, 0), 2)] == ["b", "a"]
    rejected = build(index, held, batch(["d"], [unit(1, 1, 0)]))
    index.hold(rejected)
    after = build(index, held, batch(["e"], [unit(1, 0, 1)]))
    index.publish(after)  # the approved one was published: its hold ended, and it goes
    assert index.versions.committed() == [rejected, after]

    index.release_hold(rejected)  # the approver said no
    newest = build(index, after, batch(["f"], [unit(0, 1, 1)]))
    index.publish(newest)
    assert index.versions.committed() == [newest]
    assert backend.stored_versions() == {newest}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        index.hold(rejected)


def test_a_uid_longer_than_the_limit_is_refused(backend: Backend) -> None:
    """Validation quarantines such records; the index refuses them too, naming the length."""
    index = backend.index
    builder = index.builder(None, MANIFEST)
    builder.upsert(batch(["ok"], [unit(1, 0, 0)]))
    too_long = "u" * (MAX_UID_CHARS + 1)
    with pytest.raises(ValueError, match=rf"uid of {MAX_UID_CHARS + 1} characters.*at most {MAX_UID_CHARS}"):
        builder.upsert(batch(["fine", too_long], [unit(0, 1, 0), unit(0, 0, 1)]))
    index.publish(builder.commit())  # the refused batch left nothing behind
    assert index.open(str(index.published())).hashes() == {"ok": "h-ok"}
    longest = "w" * MAX_UID_CHARS
    assert build(index, index.published(), batch([longest], [unit(0, 1, 0)])) is not None


def test_readers_see_whole_versions_while_publishing(backend: Backend) -> None:
    index = backend.index
    sizes = {}
    for n in (1, 2, 3):
        uids = [f"u{i}" for i in range(n)]
        sizes[build(index, None, batch(uids, [unit(1, 0, 0)] * n))] = n
    index.versions.keep_versions = 10  # nothing pruned while the reader reads
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


def test_manifest_records_counts_and_parent(backend: Backend) -> None:
    index = backend.index
    first = build(index, None, batch(["a"], [unit(1, 0, 0)]))
    manifest = index.manifest(first)
    assert manifest == json.loads((index.versions_dir / first / "manifest.json").read_text())
    assert (manifest["version"], manifest["records"], manifest["vectors"], manifest["parent"]) == (first, 1, 1, None)
    assert manifest["model"] == "test" and manifest["dim"] == 3  # the builder's manifest is kept
    second = build(index, first, batch(["b"], [unit(0, 1, 0)], [1]))
    assert (index.manifest(second)["records"], index.manifest(second)["parent"]) == (2, first)


def test_empty_version(backend: Backend) -> None:
    reader = backend.index.open(build(backend.index, None))
    assert reader.count() == 0 and reader.hashes() == {} and reader.search(unit(1, 0, 0), 5) == []


# -- Pinecone only ------------------------------------------------------------------------------------


def pinecone_index(tmp_path: Path, standin: PineconeStandIn, **options: object) -> PineconeIndex:
    return PineconeIndex(tmp_path / "index", standin_options(standin.url, standin.api_key, **options))


def test_index_is_created_dense_cosine_and_vectors_carry_hashes(tmp_path: Path, standin: PineconeStandIn) -> None:
    index = pinecone_index(tmp_path, standin)
    version = build(index, None, batch(["a", "b"], [unit(1, 0, 0), unit(0, 1, 0)], [1, 1], ages=[40.0, None]))
    (stored,) = standin.indexes.values()
    assert (stored.name, stored.dimension, stored.metric) == ("patientinsight", 3, "cosine")
    assert standin.api_versions == {"2026-07"}
    reader = index.open(version)
    assert reader.remote_hashes() == reader.hashes() == {"a": "h-a", "b": "h-b"}
    assert reader.remote_count() == 2
    meta = {vid: m for vid, (_, m) in standin.namespace("patientinsight", index.manifest(version)["namespace"]).items()}
    assert meta["a#h-a#0"] == {"uid": "a", "chunk": 0, "content_hash": "h-a", "age_years": 40.0, "sex": "F"}
    assert "age_years" not in meta["b#h-b#0"] and all("text" not in m for m in meta.values())
    # a second model of another dimension is refused, not mixed in
    with pytest.raises(PineconeIndexError, match="dimension 3"):
        PineconeIndex(tmp_path / "other", index.options).builder(None, {"dim": 384}).commit()


def test_commit_waits_until_searches_see_every_vector(tmp_path: Path) -> None:
    with PineconeStandIn(visible_after_s=0.5) as standin:  # eventual consistency, as in Pinecone
        index = pinecone_index(tmp_path, standin)
        version = build(index, None, batch(["a", "b", "c"], [unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)]))
        assert len(index.open(version).search(unit(1, 1, 1), 10)) == 3


def test_switching_from_embedded_carries_vectors_from_the_lake(tmp_path: Path, standin: PineconeStandIn) -> None:
    embedded = EmbeddedIndex(tmp_path / "index")
    first = build(embedded, None, batch(["a", "b"], [unit(1, 0, 0), unit(0, 1, 0)]))
    embedded.publish(first)
    index = pinecone_index(tmp_path, standin)
    second = build(index, index.published(), batch(["c"], [unit(0, 0, 1)]))
    reader = index.open(second)
    assert reader.hashes() == {"a": "h-a", "b": "h-b", "c": "h-c"}
    assert [reader.search(unit(*v), 1)[0].uid for v in ((1, 0, 0), (0, 1, 0), (0, 0, 1))] == ["a", "b", "c"]
    assert standin.count("/vectors/fetch") == 0  # nothing to fetch: the base's vectors were on disk


def write_run(run_dir: Path, uids: list[str], base: str | None) -> Path:
    """A run folder as validate/plan/embed leave it, without running the model."""
    frame = records(uids)
    frame["title"] = [f"case {u}" for u in uids]
    (run_dir / "records").mkdir(parents=True)
    (run_dir / "embeddings").mkdir()
    frame.loc[:, list(META_COLUMNS)].to_parquet(run_dir / "records" / "part-00000.parquet", index=False)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(uids), 3)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shard_file = run_dir / "embeddings" / "shard-00000.npz"
    np.savez(shard_file, uids=np.array(uids), vectors=vectors, counts=np.ones(len(uids)))
    plan = {"base": base, "embed": uids, "delete": [], "unchanged": 0, "full_refresh": False}
    (run_dir / "plan.json").write_text(json.dumps(plan))
    shards = [{"shard": 0, "start": 0, "stop": len(uids), "parts": ["part-00000.parquet"]}]
    (run_dir / "shards.json").write_text(json.dumps({"shard_size": len(uids), "shards": shards}))
    return run_dir


@pytest.fixture
def pinecone_settings(tmp_path: Path, standin: PineconeStandIn, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PINECONE_API_KEY", standin.api_key)
    return Settings(
        home=tmp_path / "home",
        index_backend="pinecone",
        pinecone_conn_id="",
        pinecone_host=standin.url,
        pinecone_batch_size=2,
        pinecone_max_retries=8,
        pinecone_backoff_s=0.01,
    )


def test_throttling_is_retried_by_the_pipeline(
    tmp_path: Path, standin: PineconeStandIn, pinecone_settings: Settings
) -> None:
    index = make_index(pinecone_settings)
    assert isinstance(index, PineconeIndex)
    # More 429s than the SDK would retry (3): the index's own retries (8) carry the batch through.
    standin.fail("/vectors/upsert", 429, times=8, retry_after="0")
    built = build_version(write_run(tmp_path / "run", ["a", "b", "c"], None), index, MANIFEST)
    assert standin.count("/vectors/upsert", 429) == 8
    assert built["records"] == 3
    publish_version(index, built["version"])
    assert make_index(pinecone_settings).published() == built["version"]
    assert index.open(built["version"]).remote_count() == 3


def test_persistent_failure_fails_clearly_and_publishes_nothing(
    tmp_path: Path, standin: PineconeStandIn, pinecone_settings: Settings
) -> None:
    settings = pinecone_settings.model_copy(update={"pinecone_max_retries": 2})
    index = make_index(settings)
    good = build_version(write_run(tmp_path / "run1", ["a", "b"], None), index, MANIFEST)["version"]
    publish_version(index, good)
    # The first batch lands, then the service fails for good: a half-written namespace to clean up.
    standin.fail("/vectors/upsert", 500, times=None, retry_after="0", after=1)
    with pytest.raises(PineconeIndexError, match=r"not committed, nothing published: upsert of \d+ vectors") as err:
        build_version(write_run(tmp_path / "run2", ["c", "d", "e", "f"], good), index, MANIFEST)
    assert "after 3 attempt(s)" in str(err.value) and "500" in str(err.value)
    assert standin.count("/vectors/upsert", 500) >= 3
    standin.heal()
    assert index.published() == good == (index.root / "CURRENT").read_text().strip()
    assert [p.name for p in index.versions_dir.iterdir()] == [good]  # no version, no staging folder
    held = {vid for rows in standin.indexes["patientinsight"].namespaces.values() for vid in rows}
    assert held == set(vector_ids(version_keys(index.versions.path(good))))  # what the failed build wrote is gone


def test_one_retry_layer_governs_the_attempts(tmp_path: Path, standin: PineconeStandIn) -> None:
    """The SDK's own retries are off: `max_retries` alone says how many requests an operation may cost,
    one per attempt, on the data plane and the control plane; an error that is not transient fails at once."""
    index = pinecone_index(tmp_path, standin, max_retries=2)
    first = build(index, None, batch(["a"], [unit(1, 0, 0)]))
    standin.fail("/vectors/upsert", 503, times=None, retry_after="0")
    with pytest.raises(PineconeIndexError, match=r"upsert of 1 vectors .* failed after 3 attempt\(s\)"):
        build(index, None, batch(["b"], [unit(0, 1, 0)]))  # one batch
    assert standin.count("/vectors/upsert", 503) == 3
    standin.heal()
    standin.fail("/query", 400, times=None)  # a bad request is not retried
    with pytest.raises(PineconeIndexError, match=r"query namespace .* failed after 1 attempt\(s\)"):
        index.open(first).search(unit(1, 0, 0), 1)
    assert standin.count("/query", 400) == 1
    standin.heal()
    other = pinecone_index(tmp_path / "other", standin, max_retries=1)  # a new client describes the index first
    standin.fail("/indexes/patientinsight", 500, times=None, retry_after="0")
    with pytest.raises(PineconeIndexError, match=r"describe index patientinsight failed after 2 attempt\(s\)"):
        other.client.data_plane()
    assert standin.count("/indexes/patientinsight", 500) == 2


def test_retry_after_is_respected(tmp_path: Path, standin: PineconeStandIn) -> None:
    index = pinecone_index(tmp_path, standin)  # backoff 0.01 s: only Retry-After makes it wait longer
    index.client.data_plane(dimension=3)
    standin.fail("/vectors/upsert", 429, times=1, retry_after="0.5")
    started = time.monotonic()
    build(index, None, batch(["a"], [unit(1, 0, 0)]))
    assert time.monotonic() - started >= 0.5
    assert (standin.count("/vectors/upsert", 429), standin.count("/vectors/upsert")) == (1, 2)


def test_ingest_on_pinecone_is_a_setting_and_an_outage_publishes_nothing(
    tmp_path: Path, sample_csv: Path, standin: PineconeStandIn, pinecone_settings: Settings
) -> None:
    first = run_ingest(str(sample_csv), pinecone_settings, run_id="first")
    index = make_index(pinecone_settings)
    assert first["published"] and index.published() == first["index_version"]
    reader = index.open(first["index_version"])
    assert isinstance(reader, PineconeReader) and reader.remote_count() == first["chunks"]
    assert reader.remote_hashes() == reader.hashes() and reader.count() == first["indexed"]
    again = run_ingest(str(sample_csv), pinecone_settings, run_id="again")  # unchanged hashes: nothing re-embedded
    assert (again["embedded"], again["unchanged"], again["index_version"]) == (
        0,
        first["indexed"],
        first["index_version"],
    )

    # Five records changed (a delete-only update writes nothing to Pinecone): their upserts meet an outage.
    changed = tmp_path / "changed.csv"
    with sample_csv.open(newline="", encoding="utf-8") as f, changed.open("w", newline="", encoding="utf-8") as out:
        rows = list(csv.DictReader(f))
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**row, "patient": row["patient"] + " Revised."} for row in rows[:5]])
    standin.fail("/vectors/upsert", 500, times=None, retry_after="0")
    settings = pinecone_settings.model_copy(update={"pinecone_max_retries": 1})
    with pytest.raises(PineconeIndexError, match=r"nothing published: upsert of \d+ vectors .* failed after 2"):
        run_ingest(str(changed), settings, run_id="outage")
    assert make_index(settings).published() == first["index_version"]
    assert (settings.index_dir / "CURRENT").read_text().strip() == first["index_version"]
    held = {vid for rows in standin.indexes["patientinsight"].namespaces.values() for vid in rows}
    assert held == set(vector_ids(version_keys(settings.index_dir / "versions" / first["index_version"])))


def test_api_key_from_the_airflow_connection(
    tmp_path: Path, standin: PineconeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PINECONE_API_KEY", raising=False)
    settings = Settings(home=tmp_path / "home", index_backend="pinecone", pinecone_backoff_s=0.01)

    def configured() -> VectorIndex:  # as the DAG, the command line and the service make it
        return make_index(settings, pinecone_credentials)

    with pytest.raises(PineconeIndexError, match="no Pinecone API key"):
        build(configured(), None, batch(["a"], [unit(1, 0, 0)]))
    conn = {"conn_type": "pinecone", "host": standin.url, "password": standin.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_PINECONE_DEFAULT", json.dumps(conn))
    version = build(configured(), None, batch(["a"], [unit(1, 0, 0)]))
    assert configured().open(version).remote_count() == 1
    wrong = {**conn, "password": "pcsk-wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_PINECONE_DEFAULT", json.dumps(wrong))
    with pytest.raises(Exception, match="Invalid API Key"):
        build(configured(), None, batch(["b"], [unit(1, 0, 0)]))


def test_records_of_a_version_are_the_lake_copy(tmp_path: Path, standin: PineconeStandIn) -> None:
    index = pinecone_index(tmp_path, standin)
    version = build(index, None, batch(["a"], [unit(1, 0, 0)]))
    folder = index.versions_dir / version
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "segments"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["backend"] == "pinecone" and manifest["vector_layout"] == "shared" and manifest["vectors"] == 1
    assert manifest["namespace"] == index.namespace_for(MANIFEST)  # one per lake and embedding
    (segment,) = manifest["segments"]  # the lake's side in segments, as the embedded index; no vectors.npy
    files = sorted(p.name for p in (folder / "segments" / segment["name"]).iterdir())
    assert files == ["records.arrow", "records.parquet"]
    assert pd.read_parquet(folder / "segments" / segment["name"] / "records.parquet")["uid"].tolist() == ["a"]

    grown = build(index, version, batch(["b"], [unit(0, 1, 0)]))  # the base's segment linked, one added
    names = [s["name"] for s in index.versions.manifest(grown)["segments"]]
    assert names[0] == segment["name"] and len(names) == 2
    kept = index.versions_dir / grown / "segments" / names[0] / "records.parquet"
    assert kept.stat().st_ino == (folder / "segments" / names[0] / "records.parquet").stat().st_ino
