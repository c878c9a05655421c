"""Versions as segments (index.segments): a version made of its base's segments, hard-linked, and a delta
segment scores exactly as the same records built whole, leave-one-out included, for every retriever; its
base's files are shared, not copied; merges keep the scores; rollback and pruning keep every version
whole; a build killed mid-commit leaves its base and the published version as they were."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest

from patientinsight.embedding.encoder import Embedder
from patientinsight.index import segments
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.lexical import Bm25Params, lexical_index_hook
from patientinsight.index.types import META_COLUMNS, EmbeddedBatch
from patientinsight.retrieval.passages import first_sentences
from patientinsight.retrieval.searcher import RETRIEVERS, RetrievalConfig, Searcher
from tests.helpers import real_records

pytestmark = pytest.mark.realdata

PARAMS = Bm25Params(title_weight=2, k1=3.0, b=1.0)
MANIFEST = {"dim": 8, "model": "test"}


def vectors_of(records: pd.DataFrame) -> np.ndarray:
    """One unit vector per record, fixed by its uid and text (a changed text gets a new vector)."""
    out = np.empty((len(records), 8), dtype=np.float32)
    for i, (uid, text) in enumerate(zip(records["uid"], records["text"], strict=True)):
        seed = int.from_bytes(hashlib.sha256(f"{uid}|{text}".encode()).digest()[:8], "little")
        out[i] = np.random.default_rng(seed).standard_normal(8)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def batch(records: pd.DataFrame) -> EmbeddedBatch:
    return EmbeddedBatch(records.loc[:, list(META_COLUMNS)], vectors_of(records), np.ones(len(records), np.int64))


def commit(index: EmbeddedIndex, base: str | None, upserts: pd.DataFrame, deletes: list[str] | None = None) -> str:
    builder = index.builder(base, MANIFEST)
    if len(upserts):
        builder.upsert(batch(upserts))
    builder.delete(deletes or [])
    return builder.commit(staged_extras=lexical_index_hook(PARAMS))


def searcher(index: EmbeddedIndex, version: str) -> Searcher:
    config = RetrievalConfig(rerank_candidates=30, rm3_weight=0.3)
    return Searcher(index.open(version), cast(Embedder, None), config)  # query vectors are given


@pytest.fixture(scope="module")
def real(real_data_dir: Path) -> pd.DataFrame:
    return real_records(real_data_dir, 160)


def updated(real: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str], pd.DataFrame]:
    """The first 120 records, an update (5 of them changed, 20 new) with 4 deleted, and the records the
    updated version holds, in the order a whole build writes them (kept base rows, then the upserts)."""
    base = real.iloc[:120].reset_index(drop=True)
    changed = base.iloc[[3, 40, 41, 77, 119]].assign(text=lambda f: f["text"] + " Revised at follow-up.")
    changed = changed.assign(content_hash=changed["text"].map(lambda t: hashlib.sha256(t.encode()).hexdigest()))
    upserts = pd.concat([changed, real.iloc[120:140]], ignore_index=True)
    deletes = base["uid"].iloc[[0, 10, 60, 100]].tolist()
    kept = base[~base["uid"].isin([*deletes, *changed["uid"]])]
    return base, upserts, deletes, pd.concat([kept, upserts], ignore_index=True)


def assert_same_scores(a: Searcher, b: Searcher, records: pd.DataFrame) -> None:
    """Every retriever, on short queries from the records, each with its own record excluded."""
    assert [a.reader.uid_at(i) for i in range(a.reader.count())] == [
        b.reader.uid_at(i) for i in range(b.reader.count())
    ]
    vectors = vectors_of(records)
    for row in (2, 17, 50, 90, len(records) - 3):
        query, uid = first_sentences(records["text"].iloc[row]), records["uid"].iloc[row]
        for retriever in RETRIEVERS:
            got = a.scores(retriever, query, vectors[row], exclude=[uid])
            want = b.scores(retriever, query, vectors[row], exclude=[uid])
            assert np.array_equal(np.isinf(got), np.isinf(want)), retriever
            finite = np.isfinite(want)
            assert np.allclose(got[finite], want[finite], rtol=1e-5, atol=1e-6), (retriever, row)
            assert [h.uid for h in a.search(query, 10, retriever=retriever, vector=vectors[row], exclude=[uid])] == [
                h.uid for h in b.search(query, 10, retriever=retriever, vector=vectors[row], exclude=[uid])
            ], (retriever, row)


def test_a_delta_version_scores_as_the_same_records_built_whole(tmp_path: Path, real: pd.DataFrame) -> None:
    base, upserts, deletes, final = updated(real)
    index = EmbeddedIndex(tmp_path / "delta")
    first = commit(index, None, base)
    second = commit(index, first, upserts, deletes)
    manifest = index.manifest(second)
    assert len(manifest["segments"]) == 2  # the base's segment, and the delta
    assert (manifest["records"], manifest["vectors"]) == (len(final), len(final))

    whole = EmbeddedIndex(tmp_path / "whole")
    built = commit(whole, None, final)
    assert len(whole.manifest(built)["segments"]) == 1
    delta_reader, whole_reader = index.open(second), whole.open(built)
    assert delta_reader.hashes() == whole_reader.hashes()
    uids = final["uid"].iloc[::7].tolist()
    pd.testing.assert_frame_equal(delta_reader.records(uids), whole_reader.records(uids))
    assert np.array_equal(delta_reader.vectors, whole_reader.vectors)
    assert_same_scores(searcher(index, second), searcher(whole, built), final)


def test_the_base_segment_is_shared_by_hard_links_not_copied(tmp_path: Path, real: pd.DataFrame) -> None:
    base, upserts, deletes, _ = updated(real)
    index = EmbeddedIndex(tmp_path)
    first = commit(index, None, base)
    second = commit(index, first, upserts, deletes)
    (name,) = [s["name"] for s in index.manifest(first)["segments"]]
    for file in ("records.parquet", "records.arrow", "vectors.npy", "lexical/term_docs.npy"):
        old = index.versions.path(first) / "segments" / name / file
        new = index.versions.path(second) / "segments" / name / file
        assert old.stat().st_ino == new.stat().st_ino, file
    # what the update's version added on disk: its own segment and the rows it hides, far less than the base
    added = sum(
        p.stat().st_size for p in index.versions.path(second).rglob("*") if p.is_file() and p.stat().st_nlink == 1
    )
    whole = sum(p.stat().st_size for p in index.versions.path(first).rglob("*") if p.is_file())
    assert added < 0.5 * whole


def test_merges_keep_the_scores(tmp_path: Path, real: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_SEGMENTS the tail is merged into one segment, and a segment that hides too many of its rows
    is rewritten: the scores stay those of the records built whole."""
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 3)
    index = EmbeddedIndex(tmp_path / "delta")
    version = commit(index, None, real.iloc[:100])
    held = real.iloc[:100]
    for start in range(100, 150, 10):  # five small updates
        version = commit(index, version, real.iloc[start : start + 10])
        held = pd.concat([held, real.iloc[start : start + 10]], ignore_index=True)
        assert len(index.manifest(version)["segments"]) <= 3
    gone = held["uid"].iloc[:30].tolist()  # 30% of the base hidden: past MAX_DEAD_SHARE
    version = commit(index, version, real.iloc[0:0], gone)
    held = held[~held["uid"].isin(gone)].reset_index(drop=True)
    assert not list((index.versions.path(version) / "deleted").glob("*.npy"))  # rewritten, nothing hidden
    whole = EmbeddedIndex(tmp_path / "whole")
    assert_same_scores(searcher(index, version), searcher(whole, commit(whole, None, held)), held)


def test_rollback_and_pruning_keep_every_kept_version_whole(tmp_path: Path, real: pd.DataFrame) -> None:
    index = EmbeddedIndex(tmp_path, keep_versions=2)
    base, upserts, deletes, final = updated(real)
    first = commit(index, None, base)
    index.publish(first)
    second = commit(index, first, upserts, deletes)
    index.publish(second)
    query, vector = first_sentences(final["text"].iloc[5]), vectors_of(final.iloc[[5]])[0]
    before = searcher(index, second).scores("hybrid_rerank", query, vector)
    index.publish(first)  # rollback
    assert index.published() == first and index.open(first).count() == len(base)
    index.publish(second)
    third = commit(index, second, real.iloc[140:150])
    index.publish(third)  # keep 2: the first version goes, and with it the last link but two of its files
    assert index.versions.committed() == [second, third]
    after = searcher(index, second).scores("hybrid_rerank", query, vector)
    assert np.array_equal(before, after)
    assert index.open(third).count() == len(final) + 10


KILLED_BUILD = """
import os, signal, sys
import pandas as pd
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.lexical import lexical_index_hook
from tests.unit.index.test_segments import PARAMS, MANIFEST, batch

index = EmbeddedIndex(sys.argv[1])
builder = index.builder(index.published(), MANIFEST)
builder.upsert(batch(pd.read_parquet(sys.argv[2])))
hook = lexical_index_hook(PARAMS)

def killed(staging):
    hook(staging)  # the delta's lexical index written, the version not yet renamed into place
    os.kill(os.getpid(), signal.SIGKILL)

builder.commit(staged_extras=killed)
"""


def test_a_killed_delta_build_changes_nothing_and_its_debris_goes(tmp_path: Path, real: pd.DataFrame) -> None:
    index = EmbeddedIndex(tmp_path / "index")
    first = commit(index, None, real.iloc[:100])
    index.publish(first)
    digest = {p.relative_to(tmp_path): p.read_bytes() for p in index.versions.path(first).rglob("*") if p.is_file()}
    real.iloc[100:110].to_parquet(tmp_path / "upserts.parquet")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path / "index"), str(tmp_path / "upserts.parquet")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert index.versions.committed() == [first] and index.published() == first
    assert list(index.versions_dir.glob(".staging-*"))  # what the kill left
    after = {p.relative_to(tmp_path): p.read_bytes() for p in index.versions.path(first).rglob("*") if p.is_file()}
    assert after == digest  # the base's shared files untouched
    second = commit(index, first, real.iloc[100:110])  # the next build removes the debris and succeeds
    assert not list(index.versions_dir.glob(".staging-*")) and not list((tmp_path / "index").glob(".build-*"))
    assert index.open(second).count() == 110
