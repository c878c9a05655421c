"""The Pinecone builder in bounded memory: upserts are spilled to disk, never held; the commit makes each
request's vectors only when that request is sent (at most `concurrency` at once), so what it holds does
not grow with the records; and the streamed commit writes exactly what holding every batch wrote."""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import tests
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.pinecone import PineconeIndex
from patientinsight.index.pinecone_keys import vector_ids, version_keys
from patientinsight.index.pinecone_parts import VectorPart
from patientinsight.index.pinecone_support import vector_id, vector_metadata
from patientinsight.index.records import VersionRecords
from patientinsight.index.types import META_COLUMNS, STORED_RECORD, EmbeddedBatch
from patientinsight.index.versions import BUILD_PREFIX, OWNER_FILE, owned_by_live_build
from tests.pinecone_standin import PineconeStandIn, standin_options


def make_batch(first: int, n: int, dim: int, chunks: int = 1, seed: int = 0) -> EmbeddedBatch:
    """Records `r<first>`...; every third has no age, every fifth no sex; record i owns `chunks` vectors
    when i is even, else 1."""
    rng = np.random.default_rng(seed + first)
    uids = [f"r{i}" for i in range(first, first + n)]
    counts = np.array([chunks if i % 2 == 0 else 1 for i in range(first, first + n)], dtype=np.int64)
    vectors = rng.normal(size=(int(counts.sum()), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = pd.DataFrame({
        "uid": uids, "pmid": ["1"] * n, "title": ["t"] * n, "text": [f"text of {u}" for u in uids],
        "age_years": [math.nan if i % 3 == 0 else float(i % 90) for i in range(first, first + n)],
        "sex": [None if i % 5 == 0 else "FM"[i % 2] for i in range(first, first + n)], "pub_date": [None] * n,
        "similar_patients": ["{}"] * n, "relevant_articles": ["{}"] * n, "content_hash": [f"h-{u}" for u in uids],
    })  # fmt: skip
    return EmbeddedBatch(records, vectors, counts)


def held_items(batches: list[EmbeddedBatch]) -> dict[str, tuple[list[float], dict[str, Any]]]:
    """What the builder wrote when it held every batch until the commit: every chunk's vector item."""
    out = {}
    for batch in batches:
        row = 0
        for rec, count in zip(batch.records.itertuples(index=False), batch.chunk_counts, strict=True):
            for chunk in range(int(count)):
                values = np.asarray(batch.vectors[row], dtype=np.float32).tolist()
                meta = vector_metadata(rec.uid, chunk, rec.content_hash, rec.age_years, rec.sex)
                out[vector_id(rec.uid, chunk, rec.content_hash)] = (values, meta)
                row += 1
    return out


def held_records(batches: list[EmbeddedBatch]) -> pd.DataFrame:
    """The held builder's records.parquet: every batch's records with their chunk counts, in order."""
    frames = [b.records.loc[:, list(META_COLUMNS)].assign(chunk_count=b.chunk_counts) for b in batches]
    return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), schema=STORED_RECORD).to_pandas()


def lake_records(index: PineconeIndex, version: str) -> pd.DataFrame:
    """The version's live records in the lake (its segments), in position order."""
    return VersionRecords(index.versions.path(version)).frame(list(STORED_RECORD.names))


def stored(standin: PineconeStandIn, index: PineconeIndex, version: str) -> dict[str, tuple[list[float], Any]]:
    """The version's vectors as Pinecone holds them: those its records name, in its namespace."""
    rows = standin.namespace(index.options.index_name, index.manifest(version)["namespace"])
    return {
        vid: (rows[vid][0].tolist(), rows[vid][1]) for vid in vector_ids(version_keys(index.versions.path(version)))
    }


def pinecone(root: Path, standin_url: str, api_key: str, **options: Any) -> PineconeIndex:
    return PineconeIndex(root, standin_options(standin_url, api_key, **options))


def test_upsert_spills_to_a_claimed_folder_and_keeps_no_batch(tmp_path: Path, standin: PineconeStandIn) -> None:
    index = pinecone(tmp_path / "index", standin.url, standin.api_key)
    builder = index.builder(None, {"dim": 8, "model": "test"})
    batch = make_batch(0, 30, 8, chunks=2)
    gone = weakref.ref(batch.vectors)
    expected_bytes = batch.vectors.nbytes
    builder.upsert(batch)
    del batch
    gc.collect()
    assert gone() is None, "the builder kept a reference to the batch's vectors"
    (spill,) = (tmp_path / "index").glob(f"{BUILD_PREFIX}*")
    assert (spill / "upserts.f32").stat().st_size == expected_bytes  # on disk instead
    assert (spill / OWNER_FILE).exists() and owned_by_live_build(spill)
    assert index.versions.remove_debris() == []  # a live build's spill stays
    version = builder.commit()
    assert not list((tmp_path / "index").glob(f"{BUILD_PREFIX}*"))  # and goes with the commit
    assert index.manifest(version)["vectors"] == 45


def test_streamed_commit_equals_the_held_one(tmp_path: Path, standin: PineconeStandIn) -> None:
    """From nothing, then on a Pinecone base (kept vectors fetched), with records that span requests."""
    index = pinecone(tmp_path / "index", standin.url, standin.api_key, batch_size=3, concurrency=3)
    first = [make_batch(0, 7, 8, chunks=3), make_batch(7, 5, 8, chunks=2), make_batch(12, 1, 8)]
    builder = index.builder(None, {"dim": 8, "model": "test"})
    for b in first:
        builder.upsert(b)
    upserts_before = standin.count("/vectors/upsert")
    v1 = builder.commit()
    expected = held_items(first)
    assert stored(standin, index, v1) == expected
    assert standin.count("/vectors/upsert") - upserts_before == math.ceil(len(expected) / 3)  # as many requests
    pd.testing.assert_frame_equal(lake_records(index, v1), held_records(first))

    # r3 and r8 replaced, r4 and r12 deleted: the rest of v1 is shared with it, not written again.
    second = make_batch(3, 1, 8, chunks=4, seed=9), make_batch(8, 1, 8, seed=9)
    for b in second:
        b.records["content_hash"] = [f"h2-{u}" for u in b.records["uid"]]
    builder = index.builder(v1, {"dim": 8, "model": "test"})
    for b in second:
        builder.upsert(b)
    builder.delete(["r4", "r12"])
    upserts_before = standin.count("/vectors/upsert")
    v2 = builder.commit()
    assert index.manifest(v2)["vectors_written"] == 2  # r3's and r8's (odd uids own one chunk)
    assert standin.count("/vectors/upsert") - upserts_before == 1 and standin.count("/vectors/fetch") == 0
    replaced = {"r3", "r4", "r8", "r12"}
    kept = [
        EmbeddedBatch(
            b.records[~b.records["uid"].isin(replaced)].reset_index(drop=True),
            b.vectors[np.repeat(~b.records["uid"].isin(replaced).to_numpy(), b.chunk_counts)],
            b.chunk_counts[~b.records["uid"].isin(replaced).to_numpy()],
        )
        for b in first
    ]
    assert stored(standin, index, v2) == held_items([*kept, *second])
    records = lake_records(index, v2)
    pd.testing.assert_frame_equal(records, held_records([*kept, *second]))
    assert index.manifest(v2)["records"] == len(records) == 11


def test_streamed_commit_carries_an_embedded_base_from_its_file(tmp_path: Path, standin: PineconeStandIn) -> None:
    """The same records and vectors whether a version was built by the embedded index or by Pinecone."""
    batches = [make_batch(0, 9, 8, chunks=2), make_batch(9, 4, 8)]
    embedded = EmbeddedIndex(tmp_path / "index")
    builder = embedded.builder(None, {"dim": 8, "model": "test"})
    for b in batches:
        builder.upsert(b)
    base = builder.commit()
    index = pinecone(tmp_path / "index", standin.url, standin.api_key, batch_size=4)
    carrier = index.builder(base, {"dim": 8, "model": "test"})
    carrier.delete(["r1"])
    version = carrier.commit()
    expected = {vid: item for vid, item in held_items(batches).items() if not vid.startswith("r1#")}
    assert stored(standin, index, version) == expected
    records = lake_records(index, version)
    base_records = embedded.open(base).frame(list(STORED_RECORD.names))
    pd.testing.assert_frame_equal(records, base_records[base_records["uid"] != "r1"].reset_index(drop=True))


def test_at_most_concurrency_requests_hold_vectors(
    tmp_path: Path, standin: PineconeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The structural bound: a request's vectors are made when its task runs, not before the tasks are
    handed over, and at most `concurrency` of them exist (made, not yet sent) at any moment."""
    index = pinecone(tmp_path / "index", standin.url, standin.api_key, batch_size=5, concurrency=3)
    lock = threading.Lock()
    live = {"now": 0, "most": 0, "made": 0, "made_before_run": -1}
    real_items = VectorPart.items

    def items(self: VectorPart, start: int, stop: int) -> list[dict[str, Any]]:
        made = real_items(self, start, stop)
        with lock:
            live["now"] += 1
            live["made"] += 1
            live["most"] = max(live["most"], live["now"])
        return made

    monkeypatch.setattr(VectorPart, "items", items)
    data = index.client.data_plane(dimension=8)
    real_upsert = data.upsert

    def upsert(**kwargs: Any) -> Any:
        try:
            return real_upsert(**kwargs)
        finally:
            with lock:
                live["now"] -= 1

    monkeypatch.setattr(data, "upsert", upsert)
    real_run = index.client.run_batches

    def run_batches(tasks: Any, what: str) -> int:
        live["made_before_run"] = live["made"]
        return real_run(tasks, what)

    monkeypatch.setattr(index.client, "run_batches", run_batches)
    builder = index.builder(None, {"dim": 8, "model": "test"})
    for first in range(0, 200, 20):
        builder.upsert(make_batch(first, 20, 8, chunks=2))
    builder.commit()
    assert live["made_before_run"] == 0  # the tasks hold ranges, not vectors
    assert live["made"] == math.ceil(300 / 5)
    assert 1 <= live["most"] <= 3


STANDIN_PROCESS = """
import sys
from tests.pinecone_standin import PineconeStandIn
with PineconeStandIn() as standin:
    print(standin.url, standin.api_key, flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def standin_process() -> Iterator[tuple[str, str]]:
    """The stand-in in a process of its own, so what it stores is not counted in this one's memory."""
    process = subprocess.Popen(
        [sys.executable, "-c", STANDIN_PROCESS],
        cwd=Path(tests.__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    url, api_key = process.stdout.readline().split()
    try:
        yield url, api_key
    finally:
        process.stdin.close()
        process.wait(timeout=30)


COMMIT_PEAKS = """
import json, sys, tracemalloc
from pathlib import Path
from tests.unit.index.test_pinecone_streaming import make_batch, pinecone
url, api_key, folder = sys.argv[1:]
peaks, vectors = {}, {}
for n in (100, 2000, 8000):  # the first warms up: the SDK's modules are imported by the first commit
    index = pinecone(Path(folder) / f"index-{n}", url, api_key, batch_size=50)
    builder = index.builder(None, {"dim": 256, "model": "test"})
    for first in range(0, n, 100):
        builder.upsert(make_batch(first, 100, 256))
    tracemalloc.start()
    version = builder.commit()
    peaks[n] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    vectors[n] = index.manifest(version)["vectors"]
print(json.dumps({"peaks": peaks, "vectors": vectors}))
"""


def test_commit_memory_does_not_grow_with_the_records(tmp_path: Path, standin_process: tuple[str, str]) -> None:
    """Python memory traced during the commit, for 2,000 and 8,000 records of 256 dimensions: four times
    the records add less than their vectors' float32 size; what the commit holds is set by `concurrency`
    and `batch_size`. (Measured: about 8.6 and 9.2 MB, and 7.3 and 9.4 on a busy machine; the builder that
    held every batch peaked at about 23 and 78 MB, as it made every vector's upsert item before sending
    any.) Traced in a
    process of its own: tracemalloc counts every thread's allocations, and a test process holds other
    tests' threads (servers, pollers)."""
    url, api_key = standin_process
    done = subprocess.run(
        [sys.executable, "-c", COMMIT_PEAKS, url, api_key, str(tmp_path)],
        cwd=Path(tests.__file__).resolve().parent.parent, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    peaks = {int(n): peak for n, peak in found["peaks"].items()}
    assert found["vectors"] == {"100": 100, "2000": 2000, "8000": 8000}
    # float32: the least a builder holding them would add (the old one added about 55 MB). What is in flight
    # (`concurrency` batches of upsert items) moves the peaks by about 2 MB from run to run on a busy machine,
    # so the bound is the vectors' size, not a fraction of it.
    added_vectors = (8000 - 2000) * 256 * 4
    assert peaks[8000] - peaks[2000] < added_vectors, peaks
