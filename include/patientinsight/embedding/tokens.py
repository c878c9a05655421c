"""What the exported runtimes (ONNX Runtime, OpenVINO) share: the model's own tokenizer in front of
the runtime's transformer, and its Pooling and Normalize modules reproduced with numpy behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], np.ndarray]  # padded int64 feeds -> token embeddings (batch, sequence, dim)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
PAD_MULTIPLE = 16  # token lengths a batch is padded to a multiple of (see TokenEncoder.feeds)


class UnsupportedModel(ValueError):
    """A model whose modules the exported path does not reproduce (it then stays on torch)."""


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


def pool(tokens: np.ndarray, attention_mask: np.ndarray, head: Head) -> np.ndarray:
    mask = np.asarray(attention_mask, dtype=np.float32)[:, :, None]
    tokens = np.asarray(tokens, dtype=np.float32)
    if head.pooling == "mean":
        pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    elif head.pooling == "cls":
        pooled = tokens[:, 0]
    else:
        pooled = np.where(mask > 0, tokens, -1e9).max(axis=1)
    if head.normalize:  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32, copy=False)


class TokenEncoder:
    """Tokenize, pad a batch, run it, pool: the same vectors as the model's encode() on torch."""

    def __init__(self, model: Any, runner: Runner) -> None:
        self.head = model_head(model)
        self.tokenizer = model[0].tokenizer
        self.runner = runner

    def tokenize(self, texts: Sequence[str]) -> dict[str, list[list[int]]]:
        texts = [t.lower() for t in texts] if self.head.lower_case else list(texts)
        return dict(self.tokenizer(texts, truncation=True, max_length=self.head.max_seq_length, verbose=False))

    def feeds(self, features: dict[str, list[list[int]]]) -> Feeds:
        # Lengths rounded up to a multiple of PAD_MULTIPLE: each new input shape costs OpenVINO about 20 ms
        # of shape inference (a query of 65 tokens took 24 ms where 4.9 ms ran it at a shape seen
        # before); padding is masked, so the vectors are the same within float rounding.
        padded = self.tokenizer.pad(features, padding=True, pad_to_multiple_of=PAD_MULTIPLE, return_tensors="np")
        return {n: np.asarray(padded[n], dtype=np.int64) for n in INPUT_NAMES if n in padded}

    def run(self, features: dict[str, list[list[int]]]) -> np.ndarray:
        feeds = self.feeds(features)
        return pool(self.runner(feeds), feeds["attention_mask"], self.head)

    def run_batches(self, features: dict[str, list[list[int]]], batches: list[np.ndarray], out: np.ndarray) -> None:
        """out[batch] = the vectors of each batch of positions: pipelined where the runtime can keep
        several batches in flight (OpenVINO), one after the other otherwise."""
        pick = [{k: [v[i] for i in batch] for k, v in features.items()} for batch in batches]
        pipelined = getattr(self.runner, "pipelined", None)
        if pipelined is None or len(batches) < 2:
            for batch, chosen in zip(batches, pick, strict=True):
                out[batch] = self.run(chosen)
            return

        def done(batch: np.ndarray, feeds: Feeds, tokens: np.ndarray) -> None:
            out[batch] = pool(tokens, feeds["attention_mask"], self.head)

        pipelined(((batch, self.feeds(chosen)) for batch, chosen in zip(batches, pick, strict=True)), done)
