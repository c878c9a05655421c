"""The lexical index: BM25 (bm25s) over title and text, with optional RM3-style query expansion.

Built with every index version and stored inside it, so lexical and dense search always answer from
the same records in the same order (row i of records.parquet is document i here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from bm25s import scoring

from patientinsight.settings import Settings

LEXICAL_DIR = "lexical"
BATCH_DOCUMENTS = 10_000  # documents tokenized at a time


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


def _bm25_matrix(model: Any, batches: list[_Terms], vocab_size: int) -> dict[str, Any]:
    """The term -> documents score matrix (CSC) that bm25s's own `index` builds, computed with its
    idf and term-frequency functions, written in place batch by batch: memory stays at the matrix
    (8 bytes per stored score), where `BM25.index` holds every token and several copies of the
    matrix at once (measured: 2.3 GB above the texts for 250,000 records)."""
    n_docs = int(sum(len(b.lengths) for b in batches))
    if n_docs == 0:
        raise ValueError("a lexical index needs at least one document")
    avg_len = np.concatenate([b.lengths for b in batches]).mean()  # as bm25s: the mean of an int64 array
    doc_freqs = np.zeros(vocab_size, dtype=np.int64)
    for b in batches:
        doc_freqs += np.bincount(b.terms, minlength=vocab_size)
    idf = scoring._build_idf_array(
        dict(enumerate(doc_freqs.tolist())), n_docs, scoring._select_idf_scorer(model.idf_method), model.dtype
    )
    tfc = scoring._select_tfc_scorer(model.method)
    nnz = int(doc_freqs.sum())
    index_dtype = np.int32 if nnz < 2**31 else np.int64
    indptr = np.zeros(vocab_size + 1, dtype=index_dtype)
    np.cumsum(doc_freqs, out=indptr[1:])
    data = np.empty(nnz, dtype=model.dtype)
    indices = np.empty(nnz, dtype=model.int_dtype)
    free = indptr[:-1].astype(np.int64)  # next free slot of each term's column
    first_doc = 0
    while batches:
        b = batches.pop(0)  # each batch's arrays are freed once placed
        docs = np.repeat(np.arange(first_doc, first_doc + len(b.lengths), dtype=np.int64), b.per_doc)
        lengths = np.repeat(b.lengths, b.per_doc)
        scores = idf[b.terms] * tfc(tf_array=b.counts, l_d=lengths, l_avg=avg_len, k1=model.k1, b=model.b)
        # Within a column, documents in order (as bm25s's scipy build leaves them).
        order = np.argsort(b.terms, kind="stable")
        terms = b.terms[order]
        starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]])
        sizes = np.diff(np.r_[starts, len(terms)])
        rank = np.arange(len(terms)) - np.repeat(starts, sizes)
        slots = free[terms] + rank
        indices[slots] = docs[order]
        data[slots] = scores[order]
        free[terms[starts]] += sizes
        first_doc += len(b.lengths)
    return {"data": data, "indices": indices, "indptr": indptr, "num_docs": n_docs}


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


def write_index_batches(
    folder: Path, batches: Iterable[tuple[Sequence[str], Sequence[str]]], params: Bm25Params = PLAIN_BM25
) -> None:
    """The BM25 index of documents given as batches of (titles, texts), in order; saved with bm25s
    in its own format, so LexicalIndex loads it as before."""
    vocab: dict[str, int] = {}
    terms = [_batch_terms(document_texts(titles, texts, params.title_weight), vocab) for titles, texts in batches]
    documents = int(sum(len(t.lengths) for t in terms))
    model = bm25s.BM25(k1=params.k1, b=params.b)
    if model.method not in ("robertson", "lucene", "atire"):  # bm25l and bm25+ need a non-occurrence term
        raise ValueError(f"unsupported BM25 variant {model.method}")
    model.scores = _bm25_matrix(model, terms, len(vocab))
    model.vocab_dict = {**vocab, "": len(vocab)} if "" not in vocab else vocab  # as bm25s's index() does
    model.nonoccurrence_array = None
    out = folder / LEXICAL_DIR
    model.save(str(out), show_progress=False)
    fields = {"title_weight": params.title_weight, "k1": params.k1, "b": params.b, "documents": documents}
    (out / "fields.json").write_text(json.dumps(fields))


def write_index(
    folder: Path,
    titles: Sequence[str],
    texts: Sequence[str],
    params: Bm25Params = PLAIN_BM25,
    batch: int = BATCH_DOCUMENTS,
) -> None:
    if len(titles) != len(texts):
        raise ValueError("one title per text is required")
    batches = ((titles[i : i + batch], texts[i : i + batch]) for i in range(0, len(texts), batch))
    write_index_batches(folder, batches, params)


def write_index_from_parquet(
    folder: Path, records: Path, params: Bm25Params = PLAIN_BM25, batch: int = BATCH_DOCUMENTS
) -> None:
    """The BM25 index of a records.parquet, read a batch of rows at a time (its row order)."""
    parquet = pq.ParquetFile(records)
    batches = (
        (rows.column("title").to_pylist(), rows.column("text").to_pylist())
        for rows in parquet.iter_batches(batch_size=batch, columns=["title", "text"])
    )
    write_index_batches(folder, batches, params)


def lexical_index_hook(params: Bm25Params = PLAIN_BM25) -> Callable[[Path], None]:
    """The commit hook that builds a version's BM25 index from the records.parquet it has staged, inside
    the staging folder: the lexical index appears with the vectors or not at all."""
    return lambda folder: write_index_from_parquet(folder, folder / "records.parquet", params)


class LexicalIndex:
    def __init__(self, folder: Path) -> None:
        path = folder / LEXICAL_DIR
        self.model = bm25s.BM25.load(str(path), show_progress=False)
        self.fields = json.loads((path / "fields.json").read_text())
        self.documents = int(self.fields["documents"])
        scores = self.model.scores
        # bm25s keeps term -> documents (CSC); expansion needs documents -> terms as well.
        self._by_term = sp.csc_matrix(
            (scores["data"], scores["indices"], scores["indptr"]), shape=(self.documents, len(scores["indptr"]) - 1)
        )
        self._by_doc: sp.csr_matrix | None = None
        self._terms = {i: t for t, i in self.model.vocab_dict.items()}

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for the query (0 where no query term occurs)."""
        tokens = [t for t in tokenize([query])[0] if t in self.model.vocab_dict]
        if not tokens or self.documents == 0:
            return np.zeros(self.documents, dtype=np.float32)
        return np.asarray(self.model.get_scores(tokens), dtype=np.float32)

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
        if self._by_doc is None:
            self._by_doc = self._by_term.tocsr()
        doc_weights = base[top] / base[top].sum()
        term_mass = np.asarray(self._by_doc[top].multiply(doc_weights[:, None]).sum(axis=0)).ravel()
        chosen = np.argpartition(-term_mass, min(terms, len(term_mass)) - 1)[:terms]
        chosen = chosen[term_mass[chosen] > 0]
        if len(chosen) == 0:
            return base
        term_weights = term_mass[chosen] / term_mass[chosen].sum()
        expansion = np.asarray(self._by_term[:, chosen] @ term_weights).ravel().astype(np.float32)
        # Scale the expansion to the visible scores' range so `weight` means the same for every query.
        top_expansion = float((expansion if hidden is None else np.where(hidden, 0.0, expansion)).max())
        scale = visible.max() / top_expansion if top_expansion > 0 else 0.0
        return ((1 - weight) * base + weight * scale * expansion).astype(np.float32)
