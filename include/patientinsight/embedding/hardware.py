"""What this machine offers the encoder: the CPU (model and flags), the runtimes installed, a GPU if torch
sees one, and the (backend, precision) pairs a setting allows. Which pair is fastest is not read from a
table of CPU flags: embedding.choice measures the candidates on this machine (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast

Backend = Literal["torch", "onnx", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]
Pair = tuple[Backend, Precision]
# Vectors in one class are interchangeable (lowest cosine against torch fp32 >= 0.999 on the real
# records: fp32 on any runtime, bf16); int8 vectors differ materially, so switching to or from int8
# re-embeds (identity.same_embedding).
NUMERICS: dict[Precision, str] = {"fp32": "fp32", "bf16": "fp32", "int8": "int8"}

# What each backend can run. int8 needs a calibrated (OpenVINO, NNCF) or dynamically quantized (ONNX
# Runtime) model; bf16 needs a runtime with bf16 kernels (ONNX Runtime's CPU provider has none).
SUPPORTED: dict[Backend, tuple[Precision, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
# CPU flags (as /proc/cpuinfo spells them) with which bf16 is computed rather than emulated. Without
# them a runtime either emulates bf16 (slower than fp32) or silently runs fp32 under the bf16 label, so
# bf16 is not offered as a candidate there. int8 is offered everywhere: AVX2 has int8 kernels too.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Environment variables that cap the instruction set the runtimes dispatch to (used to emulate an
# older CPU): they change what runs, so they are part of a measured choice's key.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "OV_CPU_MAX_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


@dataclass(frozen=True)
class Choice:
    backend: Backend
    precision: Precision
    device: str  # "cpu" or "cuda"
    reason: str

    @property
    def pair(self) -> Pair:
        return (self.backend, self.precision)

    def line(self) -> str:
        return f"embedding backend {self.backend} {self.precision} on {self.device}: {self.reason}"


def _cpuinfo(field: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux: no flags, no model name
        pass
    return ""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    return frozenset(_cpuinfo("flags").split())


@lru_cache(maxsize=1)
def cpu_model() -> str:
    return _cpuinfo("model name") or "unknown CPU"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gpu_available() -> bool:
    """Whether torch sees a CUDA device (torch is imported only to ask)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # no torch or a broken CUDA set-up: the CPU it is
        return False


def isa_capped() -> bool:
    """Whether an ISA cap is set (an older CPU emulated): the runtimes then dispatch below the flags."""
    return any(os.environ.get(name) for name in ISA_CAPS)


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    if flags is None and isa_capped():  # a cap names the ISA: bf16 is native only if it says so
        caps = " ".join(os.environ.get(name, "") for name in ISA_CAPS).upper()
        return "BF16" in caps or "AMX" in caps
    return any(f in (cpu_flags() if flags is None else flags) for f in BF16_FLAGS)


def backend_installed(backend: Backend) -> bool:
    return backend == "torch" or installed({"onnx": "onnxruntime", "openvino": "openvino"}[backend])


def runnable(backend: Backend, precision: Precision, flags: frozenset[str] | None = None, set_: bool = False) -> bool:
    """Whether the pair can run here as its name says. A precision set in the settings is taken at its
    word (bf16 without bf16 instructions is then emulated); a candidate of 'auto' must be native."""
    if not backend_installed(backend):
        return False
    if backend == "onnx" and isa_capped() and flags is None:
        return False  # ONNX Runtime honours no ISA cap: it would run the host's kernels, not the emulated CPU's
    if precision == "int8" and backend == "openvino":
        return installed("nncf")  # OpenVINO's int8 model is calibrated by NNCF
    return precision != "bf16" or set_ or native_bf16(flags)


def candidates(backend: str = "auto", precision: str = "auto", flags: frozenset[str] | None = None) -> list[Pair]:
    """The pairs a setting allows: the one pair where both are set (kept even if it cannot run here: the
    encoder then falls back to torch fp32, logged), else every runnable pair that fits the one set."""
    backends = list(SUPPORTED) if backend == "auto" else [_backend(backend)]
    if precision != "auto":
        fitting = [b for b in backends if precision in SUPPORTED[b]]
        if not fitting:
            _check(backends[0], precision)  # raises: names the backend and what it supports
        value = cast(Precision, precision)
        if backend != "auto":
            return [(fitting[0], value)]
        return [(b, value) for b in fitting if runnable(b, value, flags, True)] or [(fitting[0], value)]
    pairs = [(b, p) for b in backends for p in SUPPORTED[b] if runnable(b, p, flags)]
    return pairs or [(backends[0], "fp32")]  # the backend is missing: its start falls back to torch


def forced(backend: str, precision: str) -> Choice | None:
    """The choice where nothing is left to measure: both set, or torch on a GPU (the exported runtimes
    are CPU builds here); None where 'auto' leaves several candidates."""
    if backend == "auto" and gpu_available():
        value = "fp32" if precision == "auto" else _check("torch", precision)
        return Choice("torch", value, "cuda", "a GPU")
    pairs = candidates(backend, precision)
    if backend != "auto" and precision != "auto":
        return Choice(*pairs[0], "cpu", "backend and precision set in the settings")
    if len(pairs) == 1:
        return Choice(*pairs[0], "cpu", "the only candidate installed for the settings")
    return None


def _backend(name: str) -> Backend:
    if name not in SUPPORTED:
        raise ValueError(f"unknown embedding backend {name!r}: choose auto, {', '.join(SUPPORTED)}")
    return cast(Backend, name)


def _check(backend: Backend, precision: str) -> Precision:
    if precision not in SUPPORTED[backend]:
        raise ValueError(
            f"embedding precision {precision!r} is not available with backend {backend!r} "
            f"(it supports {', '.join(SUPPORTED[backend])})"
        )
    return cast(Precision, precision)
