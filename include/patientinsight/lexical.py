"""The lexical index: BM25 (bm25s) over title and text, with optional RM3-style query expansion.

Built with every index version and stored inside it, so lexical and dense search always answer from
the same records in the same order (row i of records.parquet is document i here).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import scipy.sparse as sp

LEXICAL_DIR = "lexical"


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


def write_index(folder: Path, titles: Sequence[str], texts: Sequence[str], title_weight: int = 1) -> None:
    model = bm25s.BM25()
    model.index(tokenize(document_texts(titles, texts, title_weight)), show_progress=False)
    out = folder / LEXICAL_DIR
    model.save(str(out), show_progress=False)
    (out / "fields.json").write_text(json.dumps({"title_weight": title_weight, "documents": len(texts)}))


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

    def expanded_scores(self, query: str, feedback_docs: int = 10, terms: int = 20, weight: float = 0.5) -> np.ndarray:
        """RM3-style pseudo-relevance feedback: the terms that weigh most in the top BM25 hits (weighted
        by their scores) are added to the query with `weight` relative to the original."""
        base = self.scores(query)
        if not base.any():
            return base
        top = np.argpartition(-base, min(feedback_docs, len(base)) - 1)[:feedback_docs]
        top = top[base[top] > 0]
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
        # Scale the expansion to the original scores' range so `weight` means the same for every query.
        scale = base.max() / expansion.max() if expansion.max() > 0 else 0.0
        return ((1 - weight) * base + weight * scale * expansion).astype(np.float32)
