"""Sentence-transformers embeddings: the model loaded once per process, texts cut into token windows,
encoded by the backend and precision set in the settings or, for 'auto', measured on this machine
(embedding.choice): OpenVINO or ONNX Runtime on an export of the same model, or torch, which is also
the fallback.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from patientinsight import progress
from patientinsight.embedding import choice as choice_cache
from patientinsight.embedding import measure
from patientinsight.embedding.hardware import NUMERICS, SUPPORTED, Backend, Choice, Pair, Precision, candidates, forced
from patientinsight.embedding.identity import numerics
from patientinsight.embedding.model import bf16_model, load_model
from patientinsight.embedding.onnx import OnnxRunner, export_onnx, export_path, onnx_providers, quantize_onnx
from patientinsight.embedding.tokens import TokenEncoder
from patientinsight.settings import Settings

log = logging.getLogger(__name__)


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
        backend: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if chunk_overlap >= chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        self.model_name = model_name
        self.strategy = strategy
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.batch_size = batch_size
        self.setting = (backend, precision)
        self._forced = forced(backend, precision)  # raises on an unknown or unsupported pair; None: measure
        self.threads = threads or default_threads()
        self._cache_dir = cache_dir
        self._tokens: TokenEncoder | None = None
        self._active: Choice | None = None
        self._lock = threading.Lock()
        self._for_versions: dict[Any, Embedder] = {}

    @property
    def cache_dir(self) -> Path:
        """Where exported models are kept: PATIENTINSIGHT_HOME/models unless given."""
        if self._cache_dir is None:
            from patientinsight.settings import get_settings

            self._cache_dir = get_settings().model_cache
        return self._cache_dir

    @property
    def requested(self) -> Choice:
        """The pair to encode with: the settings' own, or the one measured on this machine for 'auto'
        (read from the model cache; measured on first use there)."""
        return self._forced or self.measured().choice

    @property
    def backend(self) -> Backend:
        return self.requested.backend

    def measured(self, again: bool = False) -> choice_cache.Measured:
        """The measured choice for these settings on this machine, cached in the model cache."""
        pairs = candidates(*self.setting)
        spec = choice_cache.key_spec(self.model_name, pairs, self.threads, self.batch_size)
        return choice_cache.measured_choice(self.cache_dir, spec, lambda: self._measure(pairs), again)

    def _measure(self, pairs: list[Pair]) -> list[measure.Row]:
        """Each candidate started (made once per model cache: export, conversion, int8 calibration) and
        warmed on the path it runs (several batches: OpenVINO's pipelined model), then timed. One that
        falls back to torch (logged) is no candidate; where none starts, torch fp32 is measured alone."""
        encoders: dict[Pair, measure.Encode] = {}
        for pair in pairs:
            started = self._candidate(pair)
            if started is not None:
                encoders[pair] = started.encode
        if not encoders:
            encoders[("torch", "fp32")] = self._candidate(("torch", "fp32")).encode  # type: ignore[union-attr]
        try:
            return measure.round_robin(encoders, measure.check_texts())
        finally:
            encoders.clear()
            _release_runtimes()  # the losers' models (the chosen one is loaded again on its own)

    def _candidate(self, pair: Pair) -> Embedder | None:
        candidate = Embedder(
            self.model_name, "truncate", batch_size=self.batch_size, backend=pair[0], precision=pair[1],
            threads=self.threads, cache_dir=self.cache_dir,
        )  # fmt: skip
        candidate._forced = Choice(*pair, "cpu", "a candidate being measured")
        candidate.encode(["warm-up"] * (self.batch_size + 1))
        return candidate if candidate.active.pair == pair else None

    @property
    def active(self) -> Choice:
        """The backend and precision that really encode: the requested ones unless they cannot be used
        here (then torch fp32, logged with the reason). Started on first use, once."""
        if self._active is None:
            with self._lock:
                if self._active is None:
                    self._active = self._start()
                    log.info("%s (%d threads)", self._active.line(), self.threads)
        return self._active

    @property
    def active_backend(self) -> Backend:
        return self.active.backend

    @property
    def precision(self) -> Precision:
        return self.active.precision

    def _start(self) -> Choice:
        wanted = self.requested
        if wanted.backend == "torch":
            if wanted.precision == "bf16":
                bf16_model(self.model_name)
            return wanted
        try:
            path = export_path(self.cache_dir, self.model_name, self.model)
            if path.exists():
                log.info("ONNX export reused: %s", path)
            else:
                started = time.perf_counter()
                export_onnx(self.model, path)
                log.info("ONNX export written in %.1f s: %s", time.perf_counter() - started, path)
            if wanted.backend == "openvino":
                from patientinsight.embedding import openvino

                int8 = wanted.precision == "int8"
                converted = openvino.convert(path, int8, lambda: self._calibration_feeds(path))
                runner: Any = openvino.OpenVinoRunner(converted, wanted.precision, self.threads)
            else:
                if wanted.precision == "int8":
                    quantized = export_path(self.cache_dir, self.model_name, self.model, quantize=True)
                    if not quantized.exists():
                        quantize_onnx(path, quantized)
                    path = quantized
                runner = OnnxRunner(path, self.threads)
                if "CUDAExecutionProvider" in onnx_providers():
                    return Choice("onnx", wanted.precision, "cuda", wanted.reason)
            self._tokens = TokenEncoder(self.model, runner)
            return wanted
        except Exception as exc:  # any failure to export, convert or load: torch still works
            log.warning(
                "%s %s backend unavailable, falling back to torch: %s: %s",
                wanted.backend, wanted.precision, type(exc).__name__, exc,
            )  # fmt: skip
            return Choice("torch", "fp32", self.requested.device, f"{wanted.backend} {wanted.precision} failed")

    def _calibration_feeds(self, onnx_path: Path) -> Any:
        """Batches of the calibration texts as the runtime will see them (for int8 quantization)."""
        from patientinsight.embedding import openvino

        tokens = TokenEncoder(self.model, OnnxRunner(onnx_path, self.threads))
        texts = openvino.calibration_texts()
        features = tokens.tokenize(texts)
        for start in range(0, len(texts), openvino.CALIBRATION_BATCH):
            yield tokens.feeds({k: v[start : start + openvino.CALIBRATION_BATCH] for k, v in features.items()})

    @property
    def model(self) -> Any:
        return load_model(self.model_name)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _identity(self) -> dict[str, Any]:
        """What makes two vectors comparable apart from the runtime (read without starting one)."""
        return {
            "model": self.model_name,
            "dim": self.dim,
            "strategy": self.strategy,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "max_seq_length": int(self.model.max_seq_length),
        }

    def describe(self) -> dict[str, Any]:
        """What an index version must record so that its vectors can be reproduced and compared."""
        precision = self.precision
        return {
            **self._identity(),
            # The backend is recorded but not compared: every exact backend's vectors agree to cosine
            # > 0.999. The numerics are compared: int8 vectors are a different embedding.
            "backend": self.active_backend,
            "precision": precision,
            "numerics": NUMERICS[precision],
        }

    def for_version(self, manifest: dict[str, Any]) -> Embedder:
        """The embedder for a version's queries, made once per process and kept. Its numerics are the
        version's (int8 queries for int8 documents, the exact class for exact ones); within the exact
        class, 'auto' takes the pair measured fastest on one query (embedding.measure.query_pair), which
        may not be the pair fastest on documents. A backend set in the settings encodes queries too."""
        mine = self._identity()
        if not all(manifest.get(k) == mine[k] for k in ("model", "strategy", "max_seq_length", "dim")):
            return self
        version_pair = (str(manifest.get("backend", "auto")), str(manifest.get("precision", "fp32")))
        if self._forced is not None and numerics(manifest) == NUMERICS[self._forced.precision]:
            return self
        chosen: Choice | None = None  # None: the version's own pair (a forced pair of other numerics)
        if self._forced is None and version_pair[0] in SUPPORTED:
            pair, why = measure.query_pair(self.measured().rows, cast(Pair, version_pair))
            chosen = Choice(*pair, "cpu", f"queries of a {' '.join(version_pair)} version: {why}")
            if pair == self.requested.pair:
                return self
        elif numerics(manifest) == NUMERICS[self.requested.precision]:  # written before backends were recorded
            return self
        key = chosen.pair if chosen is not None else version_pair
        with self._lock:
            if key not in self._for_versions:
                log.info("queries of versions embedded with %s %s: encoded with %s %s", *version_pair, *key)
                queries = Embedder(
                    self.model_name, self.strategy, self.chunk_tokens, self.chunk_overlap, self.batch_size,
                    key[0], key[1], self.threads, self._cache_dir,
                )  # fmt: skip
                queries._forced = chosen or queries._forced
                self._for_versions[key] = queries
            return self._for_versions[key]

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
                log.info(
                    "embedded %d/%d texts (%.1f texts/s)", done, total, rate,
                    extra=progress.extra(progress.TextsEncoded(done, total)),
                )  # fmt: skip
        return np.concatenate(parts)

    def _encode_window(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if self.active_backend != "torch" and self._tokens is not None:
            features = self._tokens.tokenize(texts)
            batches = length_batches([len(ids) for ids in features["input_ids"]], self.batch_size)
            self._tokens.run_batches(features, batches, out)
            return out
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        model = bf16_model(self.model_name) if self.precision == "bf16" else self.model
        limit = int(model.max_seq_length)
        lengths = [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]
        for batch in length_batches(lengths, self.batch_size):
            vectors = model.encode(
                [texts[i] for i in batch],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
            vectors = vectors.float().cpu().numpy()  # numpy has no bfloat16
            # normalized again in fp32: bf16's own normalization leaves norms 0.3% off 1
            out[batch] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return out

    def embed_documents(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of every window, and the number of windows per text."""
        chunks = self.split(texts)
        return self.encode(chunks.texts), chunks.counts

    def embed_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def _release_runtimes() -> None:
    """Drop the per-process caches of the torch bf16 copy and the ONNX Runtime sessions (embedders that
    hold one keep it). OpenVINO's compiled models stay: destroying one from Python joins its stream
    threads while holding the GIL, which one of them may be waiting for (a deadlock seen here)."""
    from patientinsight.embedding import onnx

    bf16_model.cache_clear()
    onnx._session.cache_clear()


def make_embedder(settings: Settings) -> Embedder:
    return Embedder(
        settings.embedding_model,
        strategy=settings.embed_strategy,
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
        batch_size=settings.embed_batch_size,
        backend=settings.embedding_backend,
        precision=settings.embedding_precision,
        threads=settings.embed_threads,
        cache_dir=settings.model_cache,
    )
