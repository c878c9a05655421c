"""The lexical index: BM25 over title and text (bm25s's tokenizer and scoring functions), with optional
RM3-style query expansion.

Stored per segment (index.segments) as term frequencies, not scores: each segment keeps its documents'
terms both ways (term -> documents and document -> terms) and their lengths. BM25's corpus statistics
(the number of documents, each term's document frequency, the mean length) are the version's, over its
live rows only, and are applied when a query is scored. So a version made of a base and small delta
segments scores exactly as the same records built whole, and a new version never rewrites the base's
index. All arrays are memory-mapped: a serving process holds the vocabulary, not the postings.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pyarrow.parquet as pq
from bm25s import scoring
from scipy import sparse

from patientinsight.index.pages import unmap_pages
from patientinsight.index.postings import add_weighted_rows
from patientinsight.index.segments import RECORDS_FILE, SEGMENTS_DIR, Segment, version_segments
from patientinsight.index.versions import read_manifest
from patientinsight.settings import Settings

LEXICAL_DIR = "lexical"  # in each segment: its term frequencies
PARAMS_FILE = "lexical.json"  # in each version: how its BM25 scores (k1, b, the title's weight)
FORMAT = 2  # 1: bm25s's own score matrix per version (earlier releases)
BATCH_DOCUMENTS = 10_000  # documents tokenized at a time
METHOD = "lucene"  # bm25s's default BM25 variant


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, English stop words removed, Snowball-stemmed tokens."""
    return list(bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False))


def document_texts(titles: Sequence[str], texts: Sequence[str], title_weight: int) -> list[str]:
    """Field weighting the simple way: the title counts `title_weight` times."""
    return [" ".join([title] * title_weight + [text]) for title, text in zip(titles, texts, strict=True)]


@dataclass
class _Terms:
    """One batch of documents as (term id, count) pairs, document by document: all BM25 needs of
    them, smaller than their tokens since repeated terms are counted once."""

    terms: np.ndarray  # int32, each document's distinct terms in turn
    counts: np.ndarray  # float32, how often each occurs in its document
    per_doc: np.ndarray  # int64, distinct terms per document
    lengths: np.ndarray  # int64, tokens per document


def _batch_terms(texts: list[str], vocab: dict[str, int]) -> _Terms:
    """Tokenize one batch with bm25s and count its terms; `vocab` (the whole corpus's) grows."""
    part = bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=True, show_progress=False)
    remap = np.empty(len(part.vocab), dtype=np.int32)  # the batch's own ids -> the corpus's ids
    for token, local in part.vocab.items():
        remap[local] = vocab.setdefault(token, len(vocab))
    pairs = [np.unique(remap[np.asarray(ids, dtype=np.int64)], return_counts=True) for ids in part.ids]
    return _Terms(
        terms=np.concatenate([t for t, _ in pairs]) if pairs else np.empty(0, np.int32),
        counts=np.concatenate([c for _, c in pairs]).astype(np.float32) if pairs else np.empty(0, np.float32),
        per_doc=np.array([len(t) for t, _ in pairs], dtype=np.int64),
        lengths=np.array([len(ids) for ids in part.ids], dtype=np.int64),
    )


@dataclass(frozen=True)
class Bm25Params:
    """How the BM25 index is built: the title's weight and BM25's term-frequency saturation (k1) and
    length normalization (b). Defaults are bm25s's; the settings carry the values tuned on `tune`."""

    title_weight: int = 1
    k1: float = 1.5
    b: float = 0.75


PLAIN_BM25 = Bm25Params()  # bm25s's defaults: the baseline that results are compared with


def bm25_params(settings: Settings) -> Bm25Params:
    return Bm25Params(title_weight=settings.title_weight, k1=settings.bm25_k1, b=settings.bm25_b)


def _postings(batches: list[_Terms], vocab_size: int) -> dict[str, np.ndarray]:
    """Both layouts of one segment's term frequencies: document -> terms as tokenized, and term ->
    documents (documents in order within a term), placed batch by batch with no sort of the whole."""
    per_doc = np.concatenate([b.per_doc for b in batches]) if batches else np.empty(0, np.int64)
    doc_terms = np.concatenate([b.terms for b in batches]) if batches else np.empty(0, np.int32)
    doc_tf = np.concatenate([b.counts for b in batches]) if batches else np.empty(0, np.float32)
    lengths = np.concatenate([b.lengths for b in batches]) if batches else np.empty(0, np.int64)
    doc_freqs = np.bincount(doc_terms, minlength=vocab_size).astype(np.int64)
    term_indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(doc_freqs, out=term_indptr[1:])
    term_docs = np.empty(len(doc_terms), dtype=np.int32)
    term_tf = np.empty(len(doc_terms), dtype=np.float32)
    free = term_indptr[:-1].copy()  # next free slot of each term's postings
    first_doc = 0
    for b in batches:
        docs = np.repeat(np.arange(first_doc, first_doc + len(b.lengths), dtype=np.int64), b.per_doc)
        order = np.argsort(b.terms, kind="stable")
        terms = b.terms[order]
        starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]]) if len(terms) else np.empty(0, np.int64)
        sizes = np.diff(np.r_[starts, len(terms)])
        slots = free[terms] + np.arange(len(terms)) - np.repeat(starts, sizes)
        term_docs[slots] = docs[order]
        term_tf[slots] = b.counts[order]
        free[terms[starts]] += sizes
        first_doc += len(b.lengths)
    doc_indptr = np.zeros(len(per_doc) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=doc_indptr[1:])
    return {
        "term_indptr": term_indptr, "term_docs": term_docs, "term_tf": term_tf,
        "doc_indptr": doc_indptr, "doc_terms": doc_terms.astype(np.int32), "doc_tf": doc_tf,
        "lengths": lengths.astype(np.int32),
    }  # fmt: skip


def write_segment_batches(
    segment: Path, batches: Iterable[tuple[Sequence[str], Sequence[str]]], title_weight: int = 1
) -> None:
    """One segment's lexical index from its documents as batches of (titles, texts), in row order."""
    vocab: dict[str, int] = {}
    terms = [_batch_terms(document_texts(titles, texts, title_weight), vocab) for titles, texts in batches]
    out = segment / LEXICAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, array in _postings(terms, len(vocab)).items():
        np.save(out / f"{name}.npy", array)
    (out / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    documents = int(sum(len(t.lengths) for t in terms))
    fields = {"format": FORMAT, "title_weight": title_weight, "documents": documents, "terms": len(vocab)}
    (out / "fields.json").write_text(json.dumps(fields))


def write_segment_from_parquet(segment: Path, title_weight: int = 1, batch: int = BATCH_DOCUMENTS) -> None:
    """The lexical index of a segment's records.parquet, read a batch of rows at a time (its row order)."""
    parquet = pq.ParquetFile(segment / RECORDS_FILE)
    batches = (
        (rows.column("title").to_pylist(), rows.column("text").to_pylist())
        for rows in parquet.iter_batches(batch_size=batch, columns=["title", "text"])
    )
    write_segment_batches(segment, batches, title_weight)


def _params_of(params: Bm25Params) -> dict[str, Any]:
    return {"format": FORMAT, "title_weight": params.title_weight, "k1": params.k1, "b": params.b}


def write_index(
    folder: Path,
    titles: Sequence[str],
    texts: Sequence[str],
    params: Bm25Params = PLAIN_BM25,
    batch: int = BATCH_DOCUMENTS,
) -> None:
    """A lexical index of these documents alone in `folder` (one segment, the folder itself): for
    benchmarks and tests that score documents without an index version."""
    if len(titles) != len(texts):
        raise ValueError("one title per text is required")
    batches = ((titles[i : i + batch], texts[i : i + batch]) for i in range(0, len(texts), batch))
    write_segment_batches(folder, batches, params.title_weight)
    (folder / PARAMS_FILE).write_text(json.dumps(_params_of(params)))


def _segment_fields(segment: Path) -> dict[str, Any] | None:
    """The segment's lexical fields when it has an index of this release's format, else None."""
    try:
        fields = json.loads((segment / LEXICAL_DIR / "fields.json").read_text())
    except FileNotFoundError:
        return None
    return fields if isinstance(fields, dict) and fields.get("format") == FORMAT else None


def _has_segment_index(segment: Path, title_weight: int) -> bool:
    fields = _segment_fields(segment)
    return fields is not None and fields.get("title_weight") == title_weight


def lexical_index_hook(params: Bm25Params = PLAIN_BM25) -> Callable[[Path], None]:
    """The commit hook that gives a staged version its lexical index, inside the staging folder so that
    it appears with the vectors or not at all: each segment that has none (the new one) gets it from its
    staged records.parquet; the segments linked from the base keep theirs. A staged version without
    segments (records.parquet in its folder) is indexed as one segment, the folder itself."""

    def hook(staging: Path) -> None:
        folders = sorted(p for p in (staging / SEGMENTS_DIR).glob("*") if p.is_dir())
        if not folders and (staging / RECORDS_FILE).exists():
            folders = [staging]
        for segment in folders:
            if not _has_segment_index(segment, params.title_weight):
                write_segment_from_parquet(segment, params.title_weight)
        (staging / PARAMS_FILE).write_text(json.dumps(_params_of(params)))

    return hook


def has_lexical(folder: Path) -> bool:
    """Whether the version in `folder` has a lexical index this release reads (an earlier release's
    versions have bm25s's score matrix instead, or none)."""
    try:
        return bool(json.loads((folder / PARAMS_FILE).read_text()).get("format") == FORMAT)
    except FileNotFoundError:
        return False


@dataclass
class _SegmentTerms:
    """One segment's term frequencies (memory-mapped) and what its version hides of them."""

    vocab: dict[str, int]
    terms: list[str]
    term_indptr: np.ndarray
    term_docs: np.ndarray
    term_tf: np.ndarray
    doc_indptr: np.ndarray
    doc_terms: np.ndarray
    doc_tf: np.ndarray
    lengths: np.ndarray
    offset: int  # the segment's first row among the version's stored rows
    doc_freqs: np.ndarray  # per term, over the segment's live rows

    @classmethod
    def load(cls, folder: Path, offset: int, dead: np.ndarray) -> _SegmentTerms:
        lexical = folder / LEXICAL_DIR
        if _segment_fields(folder) is None:
            raise FileNotFoundError(f"{lexical} is not a lexical index of format {FORMAT}")
        arrays = {n: np.load(lexical / f"{n}.npy", mmap_mode="r") for n in _ARRAYS}
        terms = (lexical / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        doc_freqs = np.diff(arrays["term_indptr"]).astype(np.int64)
        if len(dead):  # the hidden rows' terms no longer count: they are read document by document
            rows = [np.arange(arrays["doc_indptr"][r], arrays["doc_indptr"][r + 1]) for r in dead]
            doc_freqs -= np.bincount(arrays["doc_terms"][np.concatenate(rows)], minlength=len(doc_freqs))
        return cls(
            vocab={t: i for i, t in enumerate(terms)}, terms=terms, offset=offset, doc_freqs=doc_freqs,
            lengths=np.asarray(arrays["lengths"]), **{n: arrays[n] for n in _ARRAYS if n != "lengths"},
        )  # fmt: skip


_ARRAYS = ("term_indptr", "term_docs", "term_tf", "doc_indptr", "doc_terms", "doc_tf", "lengths")


class LexicalIndex:
    """BM25 over one version's live records, in position order (index.records)."""

    def __init__(self, folder: Path) -> None:
        try:
            self.fields = json.loads((folder / PARAMS_FILE).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{folder} has no lexical index of this release") from None
        if self.fields.get("format") != FORMAT:
            raise FileNotFoundError(f"{folder / PARAMS_FILE} is not a lexical index of format {FORMAT}")
        if (folder / "manifest.json").exists():
            segments = version_segments(folder, read_manifest(folder))
        else:  # an index of documents alone (write_index)
            documents = json.loads((folder / LEXICAL_DIR / "fields.json").read_text())["documents"]
            segments = [Segment(".", folder, int(documents), 0, np.empty(0, np.int64))]
        offsets = np.cumsum([0, *(s.rows for s in segments)])
        self.segments = [_SegmentTerms.load(s.path, int(o), s.dead) for s, o in zip(segments, offsets, strict=False)]
        live = np.concatenate([s.live_mask() for s in segments]) if segments else np.empty(0, bool)
        self.live_rows = np.flatnonzero(live)  # the stored row of each position
        self._live = live if not live.all() else None
        self.stored_rows = len(live)
        self.documents = len(self.live_rows)
        lengths = np.concatenate([s.lengths for s in self.segments]) if self.segments else np.empty(0, np.int32)
        self.k1, self.b = float(self.fields["k1"]), float(self.fields["b"])
        avg_len = float(lengths[self.live_rows].astype(np.int64).mean()) if self.documents else 1.0
        # BM25's length normalization per stored row, with the version's mean length (Robertson's tf part).
        self._norm = (self.k1 * ((1 - self.b) + self.b * lengths / avg_len)).astype(np.float32)
        # The last query's scores: the gate asks two retrievers that both start from BM25 in turn.
        self._last: tuple[str, np.ndarray] | None = None
        # BM25's tf part of every posting, computed once with this version's mean length and kept
        # (float32, one per posting: 207 MiB of heap and 1.5 s at 250,000 realistic records), so that a
        # query only sums: BM25 of a short query in 7 ms instead of 15 there.
        self._tf_parts = [self._tf_part_matrix(s) for s in self.segments]

    def _idf(self, doc_freq: int) -> float:
        return float(scoring._select_idf_scorer(METHOD)(doc_freq, N=self.documents))

    def _doc_freq(self, term: str) -> int:
        return int(sum(s.doc_freqs[s.vocab[term]] for s in self.segments if term in s.vocab))

    def _weighted(self, term_weights: dict[str, float]) -> np.ndarray:
        """Sum over the terms of weight x BM25 score, for every live record in position order: per
        segment, the query terms' rows of its tf-part matrix summed with the terms' weights where they lie
        (index.postings, scipy's C loop): a short query's common terms reach 1.9 million postings at
        250,000 records, which numpy's term-by-term adding took 4x as long to sum."""
        factors = {}
        for term, weight in term_weights.items():
            doc_freq = self._doc_freq(term)
            if doc_freq > 0:
                factors[term] = weight * self._idf(doc_freq)
        stored = np.zeros(self.stored_rows, dtype=np.float32)
        for k, s in enumerate(self.segments):
            local = [(s.vocab[t], f) for t, f in factors.items() if t in s.vocab]
            if not local:
                continue
            matrix = self._tf_parts[k]
            add_weighted_rows(stored[s.offset : s.offset + matrix.shape[1]], matrix, *zip(*local, strict=True))
            unmap_pages(s.term_docs)  # the postings' rows read stay cached, out of this process (index.pages)
        if self._live is None:
            return stored
        return np.where(self._live, stored, np.float32(0.0))[self.live_rows]

    def _tf_part_matrix(self, s: _SegmentTerms) -> sparse.csr_matrix:
        """Terms x the segment's stored rows: each posting's tf / (tf + k1 (1 - b + b len / avgdl)). The
        postings' document numbers and offsets stay memory-mapped."""
        norm = self._norm[s.offset : s.offset + len(s.lengths)]
        parts = s.term_tf / (norm[s.term_docs] + s.term_tf)
        unmap_pages(s.term_tf)  # read once, here: queries sum `parts` (index.pages)
        unmap_pages(s.term_docs)  # queries map the rows they read again
        shape = (len(s.term_indptr) - 1, len(s.lengths))
        return sparse.csr_matrix((parts, s.term_docs, s.term_indptr), shape=shape, copy=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every record for the query (0 where no query term occurs); a term the query
        repeats counts each time, as in bm25s."""
        if self.documents == 0:
            return np.zeros(0, dtype=np.float32)
        last = self._last
        if last is not None and last[0] == query:
            return last[1]
        scores = self._weighted({t: float(n) for t, n in Counter(tokenize([query])[0]).items()})
        scores.flags.writeable = False  # shared with the next caller asking the same query
        self._last = (query, scores)
        return scores

    def _term_scores(self, position: int) -> dict[str, float]:
        """Every term of one record with its BM25 score there."""
        row = int(self.live_rows[position])
        for s in reversed(self.segments):
            if row >= s.offset:
                local = row - s.offset
                start, end = int(s.doc_indptr[local]), int(s.doc_indptr[local + 1])
                tf = np.asarray(s.doc_tf[start:end], dtype=np.float64)
                scores = tf / (float(self._norm[row]) + tf)
                return {
                    s.terms[t]: self._idf(self._doc_freq(s.terms[t])) * float(v)
                    for t, v in zip(s.doc_terms[start:end].tolist(), scores.tolist(), strict=True)
                }
        return {}

    def expanded_scores(
        self,
        query: str,
        feedback_docs: int = 10,
        terms: int = 20,
        weight: float = 0.5,
        hidden: np.ndarray | None = None,
    ) -> np.ndarray:
        """RM3-style pseudo-relevance feedback: the terms that weigh most in the top BM25 hits (weighted
        by their scores) are added to the query with `weight` relative to the original. Documents
        `hidden` (a boolean mask) never serve as feedback: a query must not be expanded with its own
        record."""
        base = self.scores(query)
        visible = base if hidden is None else np.where(hidden, 0.0, base).astype(np.float32)
        if not visible.any():
            return base
        top = np.argpartition(-visible, min(feedback_docs, len(visible)) - 1)[:feedback_docs]
        top = top[visible[top] > 0]
        doc_weights = base[top] / base[top].sum()
        term_mass: Counter[str] = Counter()
        for position, doc_weight in zip(top.tolist(), doc_weights.tolist(), strict=True):
            for term, score in self._term_scores(position).items():
                term_mass[term] += doc_weight * score
        chosen = [(t, m) for t, m in term_mass.most_common(terms) if m > 0]
        if not chosen:
            return base
        total = sum(m for _, m in chosen)
        expansion = self._weighted({t: m / total for t, m in chosen})
        # Scale the expansion to the visible scores' range so `weight` means the same for every query.
        top_expansion = float((expansion if hidden is None else np.where(hidden, 0.0, expansion)).max())
        scale = visible.max() / top_expansion if top_expansion > 0 else 0.0
        return ((1 - weight) * base + weight * scale * expansion).astype(np.float32)
