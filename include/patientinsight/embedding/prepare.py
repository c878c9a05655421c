"""Make the model cache ahead of time: the ONNX export and its OpenVINO conversion (bf16 compiles from
the same files), the int8 models (OpenVINO's calibrated once where NNCF is installed, ONNX Runtime's
quantized), and the measured choice of 'auto' for this machine (embedding.choice). The serving image's
build runs it, so that pods on a read-only filesystem start on the fast path without writing a model;
a pod on another CPU than the build machine's measures its own choice at start (a few seconds, kept in
memory when the cache cannot be written).

    python -m patientinsight.embedding.prepare      # into PATIENTINSIGHT_MODEL_CACHE_DIR
"""

from __future__ import annotations

import sys

from patientinsight.embedding.encoder import Embedder, make_embedder
from patientinsight.embedding.hardware import installed
from patientinsight.settings import get_settings


def prepare() -> list[str]:
    """The backend and precision pairs made ready, then the choice; raises when a pair falls back to torch."""
    settings = get_settings()
    # Every exported model whatever the build machine's CPU: the machine that runs the image measures.
    pairs = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32")]
    pairs += [("openvino", "int8")] if installed("nncf") else []
    done = []
    for backend, precision in pairs:
        embedder = Embedder(
            settings.embedding_model, backend=backend, precision=precision, cache_dir=settings.model_cache
        )
        embedder.embed_query("warm-up")
        if (embedder.active.backend, embedder.active.precision) != (backend, precision):
            raise RuntimeError(f"{backend} {precision} could not be prepared: {embedder.active.line()}")
        done.append(f"{backend} {precision}")
    chosen = make_embedder(settings).requested  # measured here (or read) for the settings' threads and batch
    done.append(f"choice {chosen.backend} {chosen.precision}")
    return done


def main() -> None:
    sys.stderr.write(f"model cache {get_settings().model_cache}: {', '.join(prepare())} ready\n")


if __name__ == "__main__":
    main()
