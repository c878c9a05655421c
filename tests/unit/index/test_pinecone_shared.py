"""The shared layout of the Pinecone index (index.pinecone has the design): a version writes only what
no kept version holds, reads exactly its own records from a namespace that holds others' too, and
pruning deletes only what no kept version references, never while a build writes; what a killed
build wrote is collected by the next prune. Versions of the earlier layout (a namespace each) are still
read, built on, rolled back to and pruned. Against the Pinecone stand-in, through the official SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tests
from patientinsight.index import pinecone_gc
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.pinecone import PineconeIndex
from patientinsight.index.pinecone_keys import vector_ids, version_keys
from patientinsight.index.pinecone_support import PineconeIndexError, is_shared, vector_metadata
from patientinsight.index.types import META_COLUMNS, STORED_RECORD, EmbeddedBatch, Filters, VectorIndex
from tests.helpers import commit_version
from tests.pinecone_standin import PineconeStandIn, standin_options

DIM = 6
MANIFEST = {"dim": DIM, "model": "test"}


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def batch(uids: list[str], vectors: np.ndarray, content: str = "h", chunks: int = 1) -> EmbeddedBatch:
    n = len(uids)
    records = pd.DataFrame({
        "uid": uids, "pmid": ["1"] * n, "title": ["t"] * n, "text": [f"text {u}" for u in uids],
        "age_years": [40.0] * n, "sex": ["F"] * n, "pub_date": [None] * n, "similar_patients": ["{}"] * n,
        "relevant_articles": ["{}"] * n, "content_hash": [f"{content}-{u}" for u in uids],
    })  # fmt: skip
    return EmbeddedBatch(records, vectors, np.full(n, chunks, dtype=np.int64))


build = partial(commit_version, manifest=MANIFEST)


def held(standin: PineconeStandIn, index: PineconeIndex, manifest: dict[str, Any] = MANIFEST) -> set[str]:
    """The vector ids Pinecone holds in the namespace of the lake's versions embedded as `manifest` says."""
    return set(standin.namespace("patientinsight", index.namespace_for(manifest)))


def named(index: PineconeIndex, *versions: str) -> set[str]:
    """The vector ids these versions' records name."""
    return {vid for v in versions for vid in vector_ids(version_keys(index.versions.path(v)))}


def ranking(index: VectorIndex, version: str, query: np.ndarray, k: int = 50) -> list[tuple[str, float]]:
    return [(h.uid, h.score) for h in index.open(version).search(query, k)]


def same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> bool:
    """The same records in the same order, with the same scores up to float32 rounding."""
    uids = [u for u, _ in got] == [u for u, _ in expected]
    return uids and np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)


def pinecone(root: Path, standin: PineconeStandIn, keep: int = 10, **options: Any) -> PineconeIndex:
    return PineconeIndex(root, standin_options(standin.url, standin.api_key, **options), keep_versions=keep)


def whole(root: Path, standin: PineconeStandIn, index: PineconeIndex, version: str) -> tuple[EmbeddedIndex, str]:
    """The same records and vectors as a Pinecone version (read back from the stand-in), built whole by
    the embedded index: the reference every version must read as."""
    manifest = index.manifest(version)
    rows = standin.namespace("patientinsight", manifest["namespace"])
    keys = version_keys(index.versions.path(version))
    ids = vector_ids(keys) if is_shared(manifest) else [f"{uid}#0" for uid in keys.column("uid").to_pylist()]
    vectors = np.stack([rows[vid][0] for vid in ids])
    counts = keys.column("chunk_count").to_numpy().astype(np.int64)
    embedded = EmbeddedIndex(root)
    builder = embedded.builder(None, MANIFEST)
    builder.upsert(EmbeddedBatch(index.open(version).frame(list(META_COLUMNS)), vectors, counts))
    return embedded, builder.commit()


# -- writes ------------------------------------------------------------------------------------------


def test_an_update_writes_only_what_changed(tmp_path: Path, standin: PineconeStandIn) -> None:
    """40 records of 2 chunks, then 3 replaced, 2 added and 1 deleted: 10 vectors written, none fetched
    (a namespace per version wrote 80 + copies of the 68 kept ones)."""
    rng = np.random.default_rng(0)
    index = pinecone(tmp_path / "index", standin)
    uids = [f"r{i}" for i in range(40)]
    v1 = build(index, None, batch(uids, unit(rng, 80), chunks=2))
    index.publish(v1)
    upserted_before = len(held(standin, index))
    changed = batch(["r1", "r2", "r3", "n1", "n2"], unit(rng, 10), content="h2", chunks=2)
    v2 = build(index, v1, changed, deletes=("r9",))
    assert index.manifest(v2)["vectors_written"] == 10 and index.manifest(v2)["vectors"] == 80 + 4 - 2
    assert len(held(standin, index)) == upserted_before + 10  # v1's vectors stay, for v1
    assert standin.count("/vectors/fetch") == 0
    assert held(standin, index) == named(index, v1, v2)


def test_contents_a_kept_version_holds_are_not_written_again(tmp_path: Path, standin: PineconeStandIn) -> None:
    """A record changed and changed back: its vectors are the kept version's, not overwritten (a new
    embedding of the same text may differ in the last bits), and nothing is sent for it."""
    rng = np.random.default_rng(1)
    index = pinecone(tmp_path / "index", standin)
    first = unit(rng, 3)
    v1 = build(index, None, batch(["a", "b", "c"], first))
    v2 = build(index, v1, batch(["a"], unit(rng, 1), content="h2"))
    again = batch(["a"], unit(rng, 1))  # a's first contents, other values
    v3 = build(index, v2, again)
    assert index.manifest(v3)["vectors_written"] == 0
    assert np.array_equal(standin.namespace("patientinsight", index.namespace_for(MANIFEST))["a#h-a#0"][0], first[0])
    assert index.open(v3).hashes() == index.open(v1).hashes()


def test_another_embedding_gets_a_namespace_of_its_own(tmp_path: Path, standin: PineconeStandIn) -> None:
    rng = np.random.default_rng(2)
    index = pinecone(tmp_path / "index", standin, keep=1)
    v1 = build(index, None, batch(["a", "b"], unit(rng, 2)))
    index.publish(v1)
    other = {**MANIFEST, "model": "other"}
    v2 = build(index, v1, batch(["a", "b"], unit(rng, 2)), manifest=other)
    assert index.manifest(v2)["namespace"] == index.namespace_for(other) != index.namespace_for(MANIFEST)
    index.publish(v2)  # v1 pruned: its embedding's last version takes the namespace with it
    assert held(standin, index) == set() and held(standin, index, other) == named(index, v2)


# -- reads ---------------------------------------------------------------------------------------------


def test_every_kept_version_reads_as_if_built_whole(tmp_path: Path, standin: PineconeStandIn) -> None:
    """The namespace holds four versions' vectors; each version's ranking and scores (k covering every
    record) are those of the embedded index built whole on its records, other versions' vectors never
    among them, for the ranking, every record's scores and a rerank pool's; rollback to the first reads
    as it did."""
    rng = np.random.default_rng(3)
    index = pinecone(tmp_path / "index", standin)
    versions = [build(index, None, batch([f"r{i}" for i in range(30)], unit(rng, 60), chunks=2))]
    for step in range(3):
        changed = batch([f"r{step}", f"r{10 + step}", f"new{step}"], unit(rng, 6), content=f"h{step + 2}", chunks=2)
        versions.append(build(index, versions[-1], changed, deletes=(f"r{20 + step}",)))
        index.publish(versions[-1])
    queries = unit(rng, 5)
    references = [whole(tmp_path / f"whole-{n}", standin, index, version) for n, version in enumerate(versions)]
    for version, (embedded, expected) in zip(versions, references, strict=True):
        for query in queries:
            assert same(ranking(index, version, query), ranking(embedded, expected, query))
        records, chunks = index.open(version).scores(queries[0])  # the namespace's every match: exact
        reference = embedded.open(expected).scores(queries[0])
        assert np.allclose(records, reference[0], atol=1e-5) and np.allclose(chunks, reference[1], atol=1e-5)
        positions = np.arange(0, index.open(version).count(), 3)
        got = index.open(version).scores_at(queries[0], positions)
        assert np.allclose(got, reference[0][positions], atol=1e-5)
    index.publish(versions[0])  # rollback
    embedded, expected = references[0]
    assert same(ranking(index, index.published() or "", queries[1]), ranking(embedded, expected, queries[1]))


def test_search_asks_for_more_when_other_versions_outrank_its_records(tmp_path: Path, standin: PineconeStandIn) -> None:
    """Twenty later versions each replace x with a vector next to the query: for the first version they
    are the 20 best matches, none of them its own, and it still finds its k best records."""
    rng = np.random.default_rng(4)
    index = pinecone(tmp_path / "index", standin, keep=30)
    query = unit(rng, 1)[0]
    v1 = build(index, None, batch([f"r{i}" for i in range(8)] + ["x"], unit(rng, 9)))
    base = v1
    for step in range(20):
        near = query + rng.normal(scale=0.01, size=DIM).astype(np.float32)
        base = build(index, base, batch(["x"], (near / np.linalg.norm(near))[None, :], content=f"h{step + 2}"))
    embedded, expected = whole(tmp_path / "whole", standin, index, v1)
    queries_before = standin.count("/query")
    assert same(ranking(index, v1, query, k=3), ranking(embedded, expected, query, k=3))
    assert standin.count("/query") - queries_before >= 2  # 12 matches first, all 20 of x's later contents


def test_a_filter_passes_only_the_versions_own_records(tmp_path: Path, standin: PineconeStandIn) -> None:
    """A record whose age changed has vectors of both contents in the namespace, each with its own age in
    its metadata: the filter lets the other version's through, and the reader drops it."""
    rng = np.random.default_rng(15)
    index = pinecone(tmp_path / "index", standin)
    vectors = unit(rng, 3)
    v1 = build(index, None, batch(["a", "b", "c"], vectors))  # all 40 years old
    older = batch(["a"], vectors[:1], content="h2")
    older.records["age_years"] = [70.0]
    v2 = build(index, v1, older)

    def found(version: str, filters: Filters) -> list[str]:
        return [h.uid for h in index.open(version).search(vectors[0], 3, filters)]

    assert found(v1, Filters(age_min=60)) == [] and found(v2, Filters(age_min=60)) == ["a"]
    assert found(v1, Filters(age_max=50))[0] == "a" and "a" not in found(v2, Filters(age_max=50))


# -- pruning -------------------------------------------------------------------------------------------


def test_pruning_deletes_only_what_no_kept_version_references(tmp_path: Path, standin: PineconeStandIn) -> None:
    rng = np.random.default_rng(5)
    index = pinecone(tmp_path / "index", standin, keep=2)
    v1 = build(index, None, batch(["a", "b", "c", "d"], unit(rng, 4)))
    index.publish(v1)
    v2 = build(index, v1, batch(["a"], unit(rng, 1), content="h2"))
    index.publish(v2)
    v3 = build(index, v2, batch(["b"], unit(rng, 1), content="h2"), deletes=("c",))
    index.publish(v3)  # v1 pruned: a's first vector goes; c's stays, for v2; b's first stays, for v2
    assert sorted(index.versions.committed()) == [v2, v3]
    stored = held(standin, index)
    assert stored == named(index, v2, v3) and "a#h-a#0" not in stored and "c#h-c#0" in stored
    index.publish(v2)  # rollback to the kept version: it reads as built whole, and nothing is pruned
    embedded, expected = whole(tmp_path / "whole", standin, index, v2)
    query = unit(rng, 1)[0]
    assert same(ranking(index, v2, query), ranking(embedded, expected, query)) and len(ranking(index, v2, query)) == 4
    assert sorted(index.versions.committed()) == [v2, v3] and held(standin, index) == stored
    v4 = build(index, v3, batch(["e"], unit(rng, 1)))
    index.publish(v4)  # v2 pruned: c and b's first contents go
    assert held(standin, index) == named(index, v3, v4) and "c#h-c#0" not in held(standin, index)


def test_no_vector_is_deleted_while_a_build_writes(tmp_path: Path, standin: PineconeStandIn) -> None:
    """A build that writes may be writing contents a pruned version held: that version's folder and
    vectors wait for the next prune."""
    rng = np.random.default_rng(6)
    index = pinecone(tmp_path / "index", standin, keep=1)
    v1 = build(index, None, batch(["a", "b"], unit(rng, 2)))
    index.publish(v1)
    v2 = build(index, v1, batch(["a"], unit(rng, 1), content="h2"))
    with pinecone_gc.writing(index.root):  # another build, between its first upsert and its commit
        index.publish(v2)
        assert sorted(index.versions.committed()) == [v1, v2] and "a#h-a#0" in held(standin, index)
    v3 = build(index, v2, batch(["c"], unit(rng, 1)))
    index.publish(v3)
    assert index.versions.committed() == [v3] and held(standin, index) == named(index, v3)


def test_a_build_after_a_prune_writes_again_what_the_pruned_version_alone_held(
    tmp_path: Path, standin: PineconeStandIn
) -> None:
    """Once a pruned version's vectors are deleted, the next build must not skip its contents as held,
    even while the folder is still there (it goes after the prune lets go of the lock)."""
    rng = np.random.default_rng(12)
    index = pinecone(tmp_path / "index", standin)
    v1 = build(index, None, batch(["a", "b"], unit(rng, 2)))
    v2 = build(index, v1, batch(["a"], unit(rng, 1), content="h2"))
    # As the prune does, before removing the folder.
    assert pinecone_gc.release(index.client, index.versions, v1, index.manifest(v1))
    assert "a#h-a#0" not in held(standin, index) and index.versions.path(v1).is_dir()
    v3 = build(index, v2, batch(["a"], unit(rng, 1)))  # back to a's first contents
    assert index.manifest(v3)["vectors_written"] == 1 and named(index, v3) <= held(standin, index)


def test_lakes_that_share_a_pinecone_index_share_no_vectors(tmp_path: Path, standin: PineconeStandIn) -> None:
    """Each lake prunes by its own versions only: another lake's last version going takes nothing of this one."""
    rng = np.random.default_rng(13)
    mine, other = pinecone(tmp_path / "mine", standin), pinecone(tmp_path / "other", standin, keep=1)
    records = batch(["a", "b"], unit(rng, 2))
    v1 = build(mine, None, records)
    o1 = build(other, None, records)
    assert mine.namespace_for(MANIFEST) != other.namespace_for(MANIFEST)
    other.publish(o1)
    other.publish(build(other, None, batch(["c"], unit(rng, 1))))  # o1 pruned
    assert held(standin, mine) == named(mine, v1) and held(standin, other) == {"c#h-c#0"}


def test_what_a_build_could_not_write_anywhere_leaves_no_journal(tmp_path: Path, standin: PineconeStandIn) -> None:
    """A build whose first upsert fails leaves a journal for a namespace Pinecone never held: deleting from
    it answers 404, nothing to delete, and the journal goes."""
    index = pinecone(tmp_path / "index", standin, max_retries=0)
    index.client.data_plane(dimension=DIM)
    standin.fail("/vectors/upsert", 500, times=None)
    with pytest.raises(PineconeIndexError, match="nothing published"):
        build(index, None, batch(["a"], unit(np.random.default_rng(14), 1)))
    assert standin.count("/vectors/delete", 404) == 1
    assert not list((index.root / pinecone_gc.FOLDER / pinecone_gc.WRITES).iterdir())


KILLED_BUILD = """
import os, signal, sys
import numpy as np
from pathlib import Path
from patientinsight.index import pinecone_builder
from patientinsight.index.pinecone import PineconeIndex
from tests.pinecone_standin import standin_options
from tests.unit.index.test_pinecone_shared import MANIFEST, batch, unit

def killed(*args, **kwargs):  # every vector sent, the version not committed yet
    os.kill(os.getpid(), signal.SIGKILL)

pinecone_builder.wait_until_searchable = killed
url, key, root, base = sys.argv[1:]
index = PineconeIndex(Path(root), standin_options(url, key))
builder = index.builder(base, MANIFEST)
builder.upsert(batch(["a", "z1", "z2"], unit(np.random.default_rng(9), 3), content="h3"))
builder.commit()
"""


def test_what_a_killed_build_wrote_is_collected_by_the_next_prune(tmp_path: Path, standin: PineconeStandIn) -> None:
    rng = np.random.default_rng(7)
    index = pinecone(tmp_path / "index", standin)
    v1 = build(index, None, batch(["a", "b"], unit(rng, 2)))
    index.publish(v1)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_BUILD), standin.url, standin.api_key, str(index.root), v1],
        cwd=Path(tests.__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(tests.__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert {"a#h3-a#0", "z1#h3-z1#0", "z2#h3-z2#0"} <= held(standin, index)  # sent, and no version names them
    assert index.versions.committed() == [v1]
    journals = index.root / pinecone_gc.FOLDER / pinecone_gc.WRITES
    (killed,) = journals.iterdir()
    with pinecone_gc.writing(index.root):  # while another build writes, nothing is collected
        assert pinecone_gc.collect_orphans(index.client, index.versions) == 0 and killed.is_dir()
    # The next build writes z1's contents again (no version held them) and names them: they stay.
    v2 = build(index, v1, batch(["b", "z1"], unit(rng, 2), content="h3"))
    assert index.manifest(v2)["vectors_written"] == 2
    index.publish(v2)
    assert held(standin, index) == named(index, v1, v2)
    assert "z1#h3-z1#0" in held(standin, index) and not {"a#h3-a#0", "z2#h3-z2#0"} & held(standin, index)
    assert not list(journals.iterdir())


# -- eventual consistency ------------------------------------------------------------------------------


@pytest.mark.parametrize("report_lsn", [True, False])
def test_a_version_appears_once_searches_see_all_it_wrote(tmp_path: Path, report_lsn: bool) -> None:
    """By log position where Pinecone reports them, else by searching for a sample of the written vectors."""
    rng = np.random.default_rng(8)
    with PineconeStandIn(visible_after_s=0.4, report_lsn=report_lsn) as standin:
        index = pinecone(tmp_path / "index", standin)
        v1 = build(index, None, batch([f"r{i}" for i in range(5)], unit(rng, 5)))
        assert index.open(v1).count() == len(index.open(v1).search(unit(rng, 1)[0], 10)) == 5
        v2 = build(index, v1, batch(["r1", "n"], unit(rng, 2), content="h2"))
        assert {h.uid for h in index.open(v2).search(unit(rng, 1)[0], 10)} == {"r0", "r1", "r2", "r3", "r4", "n"}
        assert index.open(v2).hashes()["r1"] == "h2-r1"


# -- versions of the earlier layout --------------------------------------------------------------------


def legacy_version(index: PineconeIndex, records: EmbeddedBatch) -> str:
    """A version as the earlier release wrote it: a namespace named by its id, ids `<uid>#<chunk>`."""
    data = index.client.data_plane(dimension=DIM)
    version = "v20250101T000000000000Z"
    items = [
        {"id": f"{r.uid}#0", "values": records.vectors[i].tolist(),
         "metadata": vector_metadata(r.uid, 0, r.content_hash, r.age_years, r.sex)}
        for i, r in enumerate(records.records.itertuples(index=False))
    ]  # fmt: skip
    data.upsert(vectors=items, namespace=version)
    with index.versions.staging() as staging:
        frame = records.records.loc[:, list(META_COLUMNS)].assign(chunk_count=records.chunk_counts)
        table = pa.Table.from_pandas(frame, schema=STORED_RECORD, preserve_index=False)
        pq.write_table(table, staging / "records.parquet")
        manifest = {**MANIFEST, "backend": "pinecone", "namespace": version, "version": version,
                    "records": len(items), "vectors": len(items), "parent": None}  # fmt: skip
        index.versions.commit(staging, manifest, None)
    return version


def test_versions_of_the_earlier_layout_are_read_built_on_rolled_back_to_and_pruned(
    tmp_path: Path, standin: PineconeStandIn
) -> None:
    rng = np.random.default_rng(10)
    index = pinecone(tmp_path / "index", standin, keep=2)
    old = legacy_version(index, batch(["a", "b", "c"], unit(rng, 3)))
    index.publish(old)
    query = unit(rng, 1)[0]
    embedded, expected = whole(tmp_path / "whole", standin, index, old)
    assert same(ranking(index, old, query), ranking(embedded, expected, query))
    assert index.open(old).remote_hashes() == index.open(old).hashes()
    new = build(index, old, batch(["d"], unit(rng, 1)))  # its kept vectors are copied into the shared layout
    assert standin.count("/vectors/fetch") >= 1 and index.manifest(new)["vectors_written"] == 4
    legacy, shared = (standin.namespace("patientinsight", ns) for ns in (old, index.namespace_for(MANIFEST)))
    assert all(np.array_equal(shared[f"{u}#h-{u}#0"][0], legacy[f"{u}#0"][0]) for u in "abc")  # not re-embedded
    assert dict(ranking(index, new, query)).keys() == {"a", "b", "c", "d"}
    assert dict(ranking(index, new, query))["a"] == dict(ranking(index, old, query))["a"]
    index.publish(new)
    index.publish(old)  # rollback to it: read as before
    assert same(ranking(index, index.published() or "", query), ranking(embedded, expected, query))
    third = build(index, new, batch(["e"], unit(rng, 1)))
    index.publish(third)  # the old version pruned: its namespace emptied
    assert index.versions.committed() == [new, third] and set(standin.namespace("patientinsight", old)) == set()
    assert held(standin, index) == named(index, new, third)


def test_a_pool_fetched_for_one_version_is_not_fetched_again_for_another(
    tmp_path: Path, standin: PineconeStandIn
) -> None:
    """Content-addressed vectors never change, so the gate's second version reuses what the first fetched;
    only what differs (the replaced record) is fetched, and the scores are still each version's own."""
    rng = np.random.default_rng(11)
    index = pinecone(tmp_path / "index", standin)
    v1 = build(index, None, batch([f"r{i}" for i in range(20)], unit(rng, 20)))
    v2 = build(index, v1, batch(["r0"], unit(rng, 1), content="h2"))
    query, pool = unit(rng, 1)[0], [f"r{i}" for i in range(20)]
    first = index.open(v1).scores_at(query, index.open(v1).positions(pool))
    fetches = standin.count("/vectors/fetch")
    second = index.open(v2).scores_at(query, index.open(v2).positions(pool))
    assert standin.count("/vectors/fetch") == fetches + 1  # r0's new vector alone
    assert np.allclose(first[1:], second[1:]) and first[0] != second[0]
    small = pinecone(tmp_path / "index", standin, cache_vectors=5)  # a bounded cache keeps the last 5
    small.open(v1).scores_at(query, np.arange(20))
    assert len(small.client.vector_cache.get(small.namespace_for(MANIFEST), [f"r{i}#h-r{i}#0" for i in range(20)])) == 5
