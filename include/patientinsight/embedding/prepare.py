"""Make the model cache ahead of time: the ONNX export and its OpenVINO conversion (bf16 compiles from
the same files), and the int8 model (calibrated once) where NNCF is installed. The serving image's build runs it,
so that pods on a read-only filesystem start on the fast path without writing anything.

    python -m patientinsight.embedding.prepare      # into PATIENTINSIGHT_MODEL_CACHE_DIR
"""

from __future__ import annotations

import sys

from patientinsight.embedding.encoder import Embedder
from patientinsight.embedding.hardware import installed
from patientinsight.settings import get_settings


def prepare() -> list[str]:
    """The backend and precision pairs made ready; raises when one of them falls back to torch."""
    settings = get_settings()
    # int8 whatever the build machine's CPU: the machine that runs the image decides what it uses.
    pairs = [("onnx", "fp32"), ("openvino", "fp32")] + ([("openvino", "int8")] if installed("nncf") else [])
    done = []
    for backend, precision in pairs:
        embedder = Embedder(
            settings.embedding_model, backend=backend, precision=precision, cache_dir=settings.model_cache
        )
        embedder.embed_query("warm-up")
        if (embedder.active.backend, embedder.active.precision) != (backend, precision):
            raise RuntimeError(f"{backend} {precision} could not be prepared: {embedder.active.line()}")
        done.append(f"{backend} {precision}")
    return done


def main() -> None:
    sys.stderr.write(f"model cache {get_settings().model_cache}: {', '.join(prepare())} ready\n")


if __name__ == "__main__":
    main()
