"""What makes two versions' vectors the same embedding: the model, how texts are cut, and the
numerics (fp32-exact or int8). Versions that differ in any of them are re-embedded, never mixed."""

from __future__ import annotations

from typing import Any

EMBEDDING_KEYS = ("model", "strategy", "chunk_tokens", "chunk_overlap", "max_seq_length", "dim")  # and numerics


def same_embedding(manifest: dict[str, Any], embedding: dict[str, Any]) -> bool:
    """Whether a version's vectors were made as `embedding` would make them (else: re-embed)."""
    same_keys = all(manifest.get(k) == embedding.get(k) for k in EMBEDDING_KEYS)
    return same_keys and numerics(manifest) == numerics(embedding)


def numerics(embedding: dict[str, Any]) -> str:
    """Versions written before precisions were recorded: fp32, or int8 where they said so."""
    return str(embedding.get("numerics") or ("int8" if embedding.get("quantize") == "int8" else "fp32"))
