"""The ONNX Runtime path of the embedder: the model exported once (cached in PATIENTINSIGHT_HOME),
optionally quantized to int8, run behind the model's own tokenizer and pooling (embedding.tokens).
The export is also what OpenVINO converts (embedding.openvino).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ONNX_OPSET = 17
# The exported attention: "eager" traces to plain MatMul/Softmax, which onnxruntime runs 1.3 to 2 times
# faster on CPU than the graph traced from torch's scaled_dot_product_attention (measured here).
EXPORT_ATTENTION = "eager"


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
        "quantize": "int8 per channel" if quantize else False,
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
    """int8 dynamic quantization, weights per output channel (activations quantized per batch at run
    time, u8 x s8 as VNNI takes them), written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    # The quantizer logs an INFO line per tensor through the root logger itself (logging.info): hundreds of
    # lines in a task's log. Meanwhile, INFO records logged on the root logger itself are dropped (the
    # project logs through named loggers, whose records a root filter never sees). One quantization at a
    # time per process, so that no other one removes the filter while this one runs.
    root = logging.getLogger()
    with _QUANTIZING:
        root.addFilter(_warnings_only)
        try:
            quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=True)
            tmp.replace(path)
        finally:
            root.removeFilter(_warnings_only)
            tmp.unlink(missing_ok=True)
    return path


_QUANTIZING = threading.Lock()


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


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


class OnnxRunner:
    """Token embeddings for padded int64 feeds (an InferenceSession is safe to share across threads)."""

    def __init__(self, path: Path, threads: int) -> None:
        self.session = _session(str(path), threads, tuple(onnx_providers()))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.path = path

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["token_embeddings"], {n: feeds[n] for n in self.input_names})[0]
