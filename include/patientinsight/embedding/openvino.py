"""The OpenVINO path of the embedder: the ONNX export converted once to OpenVINO's format (cached in
PATIENTINSIGHT_HOME/models), optionally quantized to int8 with NNCF, compiled for the CPU with the
chosen inference precision (bf16 runs on AVX512_BF16 or AMX where the CPU has them).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from patientinsight.embedding.hardware import Precision, native_bf16

Feeds = dict[str, np.ndarray]
# int8 is calibrated on generated case reports (records/synthetic.py), never on the records being indexed
# or evaluated: the quantized model is the same for every corpus, and no evaluation query shaped it.
CALIBRATION_TEXTS = 192
CALIBRATION_BATCH = 16


def _nncf() -> Any:
    # NNCF sends usage telemetry unless told it runs in CI: a clinical system sends none.
    os.environ.setdefault("NNCF_CI", "1")
    import nncf

    return nncf


def converted_path(onnx_path: Path, int8: bool) -> Path:
    """Next to the ONNX export it comes from; int8 also depends on NNCF's version and the calibration."""
    if not int8:
        return onnx_path.with_suffix(".openvino")
    nncf = _nncf()
    spec = json.dumps([nncf.__version__, CALIBRATION_BATCH, calibration_texts()])  # a changed sample re-quantizes
    key = hashlib.sha256(spec.encode()).hexdigest()[:8]
    return onnx_path.with_suffix(f".openvino-int8-{key}")


def calibration_texts() -> list[str]:
    from patientinsight.records.synthetic import generate_rows

    rows = generate_rows(articles=CALIBRATION_TEXTS, seed=20261201)
    return [row["patient"] for row in rows][:CALIBRATION_TEXTS]


def _write_atomically(folder: Path, write: Callable[[Path], None]) -> Path:
    """Written into a unique temporary folder and renamed into place, so that concurrent workers never
    read half a model (the loser of a race removes its copy)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another worker renamed its copy first: theirs is the same model
            if not (folder / "model.xml").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def convert(onnx_path: Path, int8: bool, calibration: Callable[[], Iterator[Feeds]]) -> Path:
    """model.xml (+ .bin) for this export and precision, made once."""
    import openvino as ov

    folder = converted_path(onnx_path, int8)
    if (folder / "model.xml").exists():
        return folder / "model.xml"

    def write(tmp: Path) -> None:
        model = ov.Core().read_model(str(onnx_path))
        if int8:
            nncf = _nncf()
            # TRANSFORMER keeps softmax, layer norms and the residual adds in float and applies
            # SmoothQuant; MIXED quantizes activations asymmetrically (what VNNI's u8 x s8 takes).
            batches = list(calibration())
            # NNCF draws its progress bars on standard output, where a command's --json answer goes: on
            # standard error instead, and nowhere away from a terminal (an Airflow task's log).
            bars = sys.stderr if sys.stderr.isatty() else io.StringIO()
            with contextlib.redirect_stdout(bars):
                model = nncf.quantize(
                    model,
                    nncf.Dataset(batches),
                    model_type=nncf.ModelType.TRANSFORMER,
                    preset=nncf.QuantizationPreset.MIXED,
                    subset_size=len(batches),  # every calibration batch
                )
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)

    return _write_atomically(folder, write) / "model.xml"


@lru_cache(maxsize=32)  # never evicts in practice: destroying a compiled model can deadlock (encoder.py)
def compiled(path: str, precision: Precision, threads: int, hint: str = "LATENCY") -> Any:
    """One compiled model per process, path, precision and hint. LATENCY: one stream on every thread,
    for one query at a time. THROUGHPUT: several streams of fewer threads each, for many batches in
    flight (1.5x the texts/s of LATENCY on 2 cores, docs/PERFORMANCE.md)."""
    import openvino as ov

    # int8 models run their float parts (softmax, norms) in bf16 where the CPU has it, else in f32.
    precision_hint = "bf16" if precision == "bf16" or (precision == "int8" and native_bf16()) else "f32"
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision_hint}
    return ov.Core().compile_model(path, "CPU", config)


class OpenVinoRunner:
    """Token embeddings for padded int64 feeds: one batch at a time on the LATENCY model (one infer
    request per calling thread: a request is not safe to share), or many batches in flight on the
    THROUGHPUT model (`pipelined`)."""

    def __init__(self, path: Path, precision: Precision, threads: int) -> None:
        self.path, self.precision, self.threads = path, precision, threads
        self.model = compiled(str(path), precision, threads)
        self.input_names = [port.any_name for port in self.model.inputs]
        self._output = self.model.output(0)
        self._requests: dict[int, Any] = {}

    def __call__(self, feeds: Feeds) -> np.ndarray:
        import threading

        ident = threading.get_ident()
        request = self._requests.get(ident)
        if request is None:
            request = self._requests[ident] = self.model.create_infer_request()
        return np.array(request.infer({n: feeds[n] for n in self.input_names})[self._output], copy=True)

    def pipelined(self, batches: Iterator[tuple[Any, Feeds]], done: Callable[[Any, Feeds, np.ndarray], None]) -> None:
        """Run every (key, feeds) batch with as many in flight as the THROUGHPUT model wants; `done(key,
        feeds, tokens)` is called for each (in OpenVINO's thread) as soon as its batch is finished, so
        pooling one batch overlaps running the next."""
        import openvino as ov

        model = compiled(str(self.path), self.precision, self.threads, "THROUGHPUT")
        queue = ov.AsyncInferQueue(model, int(model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        errors: list[BaseException] = []

        def finished(request: Any, job: tuple[Any, Feeds]) -> None:
            try:
                done(job[0], job[1], request.get_output_tensor(0).data)
            except BaseException as exc:  # raised again in the caller's thread
                errors.append(exc)

        queue.set_callback(finished)
        for key, feeds in batches:
            queue.start_async({n: feeds[n] for n in self.input_names}, (key, feeds))
        queue.wait_all()
        if errors:
            raise errors[0]
