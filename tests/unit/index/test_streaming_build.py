"""The streaming version build: the lexical index tokenized in batches scores exactly as the one-shot
build did, and the builder writes records and vectors batch by batch with the same result."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import bm25s
import numpy as np
import pandas as pd
import pytest

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.lexical import (
    Bm25Params,
    LexicalIndex,
    document_texts,
    lexical_index_hook,
    tokenize,
    write_index,
)
from patientinsight.index.types import META_COLUMNS, EmbeddedBatch

WORDS = [
    "fever",
    "cough",
    "fevers",
    "coughing",
    "patient",
    "patients",
    "pain",
    "chest",
    "abdominal",
    "the",
    "and",
    "of",
    "with",
    "was",
    "a",
    "an",
    "headache",
    "renal",
    "failure",
    "kidney",
    "biopsy",
    "tumor",
    "tumour",
    "carcinoma",
    "fracture",
    "wrist",
    "hip",
    "knee",
    "surgery",
    "infection",
    "sepsis",
    "diabetes",
    "insulin",
    "pregnancy",
    "woman",
    "man",
    "child",
    "infant",
    "year",
    "old",
    "presented",
    "admitted",
    "hospital",
    "therapy",
]


def corpus(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    titles = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(n)]
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 60)))) for _ in range(n)]
    titles[1], texts[1] = "", ""  # an empty document
    titles[2], texts[2] = "the", "and of with"  # stop words only
    return titles, texts


QUERIES = ["coughing fever", "renal failure biopsy", "wrist fracture surgery", "the and of", "zebra", "tumour"]


@pytest.mark.parametrize("params", [Bm25Params(), Bm25Params(title_weight=2, k1=3.0, b=1.0)])
def test_segment_lexical_index_scores_as_bm25s_does(tmp_path: Path, params: Bm25Params) -> None:
    """Term frequencies stored in batches, BM25 applied at query time: the scores of bm25s's own
    one-shot index (its score matrix), within float32 rounding."""
    titles, texts = corpus(257)
    model = bm25s.BM25(k1=params.k1, b=params.b)
    model.index(tokenize(document_texts(titles, texts, params.title_weight)), show_progress=False)
    write_index(tmp_path, titles, texts, params, batch=10)  # 26 batches, vocabularies merged
    ours = LexicalIndex(tmp_path)
    assert ours.documents == 257
    for query in QUERIES:
        tokens = [t for t in tokenize([query])[0] if t in model.vocab_dict]
        expected = model.get_scores(tokens) if tokens else np.zeros(257)
        assert np.allclose(ours.scores(query), expected, rtol=1e-5, atol=1e-6), query
        assert ours.scores(query).dtype == np.float32


def test_lexical_index_from_parquet_equals_the_one_from_lists(tmp_path: Path) -> None:
    titles, texts = corpus(60, seed=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pd.DataFrame({"title": titles, "text": texts}).to_parquet(tmp_path / "b" / "records.parquet", row_group_size=7)
    write_index(tmp_path / "a", titles, texts)
    lexical_index_hook()(tmp_path / "b")  # a folder with records.parquet: indexed as one segment
    for query in QUERIES:
        assert np.array_equal(LexicalIndex(tmp_path / "a").scores(query), LexicalIndex(tmp_path / "b").scores(query))


def records(uids: list[str], tag: str = "") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": uids,
            "pmid": ["1"] * len(uids),
            "title": [f"title {u}{tag}" for u in uids],
            "text": [f"text of {u}{tag}" for u in uids],
            "age_years": [float(i) if i % 3 else None for i in range(len(uids))],
            "sex": ["F"] * len(uids),
            "pub_date": [None] * len(uids),
            "similar_patients": ["{}"] * len(uids),
            "relevant_articles": ["{}"] * len(uids),
            "content_hash": [hashlib.sha256((u + tag).encode()).hexdigest() for u in uids],
        }
    )


def batch(uids: list[str], counts: list[int], tag: str = "") -> EmbeddedBatch:
    """Vector rows that say whose they are: row j of record u is [hash(u), j, tag length]."""
    rows = [
        [float(int(u.split("-")[1])), float(j), float(len(tag))]
        for u, c in zip(uids, counts, strict=True)
        for j in range(c)
    ]
    return EmbeddedBatch(records(uids, tag), np.asarray(rows, dtype=np.float32), np.asarray(counts))


def folder_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_streaming_builder_keeps_order_vectors_and_the_base_untouched(tmp_path: Path) -> None:
    index = EmbeddedIndex(tmp_path)
    builder = index.builder(None, {"dim": 3})
    builder.upsert(batch(["u-1", "u-2", "u-3"], [1, 2, 1]))
    builder.upsert(batch(["u-4", "u-5"], [3, 1]))
    base = builder.commit()
    index.publish(base)
    before = folder_digest(index.versions_dir / base)

    builder = index.builder(base, {"dim": 3})
    builder.upsert(batch(["u-2", "u-6"], [1, 2], tag="new"))  # u-2 replaced, u-6 added
    builder.delete(["u-4"])
    version = builder.commit(staged_extras=lexical_index_hook())

    assert folder_digest(index.versions_dir / base) == before  # versions are immutable
    reader = index.open(version)
    stored = reader.records(["u-1", "u-3", "u-5", "u-2", "u-6"])
    # base's kept rows first, then the upserts
    assert [reader.uid_at(i) for i in range(reader.count())] == ["u-1", "u-3", "u-5", "u-2", "u-6"]
    assert stored["title"].tolist()[-2:] == ["title u-2new", "title u-6new"]
    assert stored.set_index("uid").loc["u-3", "age_years"] == 2.0
    expected = [[1, 0, 0], [3, 0, 0], [5, 0, 0], [2, 0, 3], [6, 0, 3], [6, 1, 3]]
    assert np.array_equal(np.asarray(reader.vectors), np.asarray(expected, dtype=np.float32))
    manifest = index.manifest(version)
    assert (manifest["records"], manifest["vectors"], manifest["parent"]) == (5, 6, base)
    assert reader.hashes()["u-2"] == hashlib.sha256(b"u-2new").hexdigest()
    assert not [p for p in index.versions_dir.iterdir() if p.name.startswith(".staging")]
    assert not list(tmp_path.glob(".build-*"))  # the upserts' spill folder is gone


def test_a_base_written_by_pandas_is_carried_over(tmp_path: Path) -> None:
    """Versions written before streaming (pandas to_parquet, all-null columns typed null) still serve as a base."""
    index = EmbeddedIndex(tmp_path)
    old = index.versions_dir / "v0"
    old.mkdir(parents=True)
    frame = records(["u-1", "u-2"]).assign(age_years=[None, None], chunk_count=[1, 1])
    frame.loc[:, [*META_COLUMNS, "chunk_count"]].to_parquet(old / "records.parquet", index=False)
    np.save(old / "vectors.npy", np.eye(2, 3, dtype=np.float32))
    (old / "manifest.json").write_text(json.dumps({"dim": 3, "version": "v0"}))
    builder = index.builder("v0", {"dim": 3})
    builder.upsert(batch(["u-3"], [1]))
    reader = index.open(builder.commit())
    assert reader.count() == 3
    assert np.array_equal(np.asarray(reader.vectors[:2]), np.eye(2, 3, dtype=np.float32))


def test_a_failed_commit_leaves_no_version_and_no_staging(tmp_path: Path) -> None:
    index = EmbeddedIndex(tmp_path)
    builder = index.builder(None, {"dim": 3})
    builder.upsert(batch(["u-1"], [1]))

    def broken(folder: Path) -> None:
        raise RuntimeError("lexical build failed")

    with pytest.raises(RuntimeError):
        builder.commit(staged_extras=broken)
    assert list(index.versions_dir.iterdir()) == []
    assert not list(tmp_path.glob(".build-*"))


def test_an_empty_build_writes_an_empty_version(tmp_path: Path) -> None:
    index = EmbeddedIndex(tmp_path)
    reader = index.open(index.builder(None, {"dim": 4}).commit())
    assert reader.count() == 0
    assert reader.vectors.shape == (0, 4)


def test_staged_extras_build_the_lexical_index_from_the_staged_records(tmp_path: Path) -> None:
    """The commit's one hook: the lexical index read from the staged records batch by batch, no records
    frame, equals the one built from the records as lists."""
    index = EmbeddedIndex(tmp_path / "index")
    builder = index.builder(None, {"dim": 3})
    new = batch(["u-1", "u-2", "u-3"], [1, 1, 2])
    builder.upsert(new)
    staged = builder.commit(staged_extras=lexical_index_hook())
    (tmp_path / "lists").mkdir()
    write_index(tmp_path / "lists", new.records["title"].tolist(), new.records["text"].tolist())
    for query in ("title u-2", "text of u-3", "zebra"):
        a = LexicalIndex(tmp_path / "lists").scores(query)
        assert np.array_equal(a, LexicalIndex(index.versions_dir / staged).scores(query))


def test_the_last_query_scores_are_shared_read_only(tmp_path: Path) -> None:
    """The gate asks two retrievers the same query in turn: the second gets the first one's BM25 scores,
    which no caller can change."""
    titles, texts = corpus(120, seed=5)
    write_index(tmp_path, titles, texts, batch=17)
    lexical = LexicalIndex(tmp_path)
    for query in QUERIES:
        first = lexical.scores(query)
        again = lexical.scores(query)
        assert again is first and not again.flags.writeable
        with pytest.raises(ValueError):
            again[0] = 1.0
    assert np.array_equal(LexicalIndex(tmp_path).scores(QUERIES[0]), lexical.scores(QUERIES[0]))


def test_delta_versions_take_texts_batch_by_batch_and_share_base_scans(tmp_path: Path) -> None:
    """Records taken from a version of several segments come back in the order asked; a delta version's
    dense scores equal its base's on the rows they share (the base file's scan is reused)."""
    index = EmbeddedIndex(tmp_path)
    builder = index.builder(None, {"dim": 3})
    builder.upsert(batch([f"u-{i}" for i in range(1, 8)], [1] * 7))
    base = builder.commit()
    builder = index.builder(base, {"dim": 3})
    builder.upsert(batch(["u-8", "u-3"], [1, 1], tag="new"))
    version = builder.commit()
    reader = index.open(version)
    asked = ["u-8", "u-1", "u-3", "u-7", "u-2"]
    assert reader.records(asked)["title"].tolist() == [
        "title u-8new",
        "title u-1",
        "title u-3new",
        "title u-7",
        "title u-2",
    ]
    query = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    on_base, on_delta = index.open(base).scores(query)[0], reader.scores(query)[0]
    shared = [i for i in range(reader.count()) if reader.uid_at(i) not in ("u-3", "u-8")]
    base_positions = index.open(base).positions([reader.uid_at(i) for i in shared])
    assert np.array_equal(on_delta[shared], on_base[base_positions])
    assert np.array_equal(on_delta, np.asarray(reader.vectors) @ query)  # what a scan from scratch gives
