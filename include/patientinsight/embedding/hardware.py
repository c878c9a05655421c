"""Which encoder backend and precision to use on this machine: the CPU's features, the runtimes that
are installed and a GPU if torch sees one. The choice follows docs/PERFORMANCE.md ("Embedding
backends"): OpenVINO was the fastest runtime; bf16 kept every vector within cosine 0.9999 of fp32
where the CPU computes bf16 natively; int8 was faster still, and the shipped retriever's leave-one-out
MRR stayed within 0.005 of fp32 in both query modes, on tune and on holdout, so it is the default
where the CPU has int8 dot-product instructions (VNNI, AMX).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]

# What each backend can run here. int8 needs a calibrated (OpenVINO, NNCF) or dynamically quantized
# (ONNX Runtime) model; bf16 needs a runtime with bf16 kernels (ONNX Runtime's CPU provider has none).
SUPPORTED: dict[Backend, tuple[Precision, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
# CPU flags (as /proc/cpuinfo spells them) that make a precision fast rather than emulated.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Choice:
    backend: Backend
    precision: Precision
    device: str  # "cpu" or "cuda"
    reason: str

    def line(self) -> str:
        return f"embedding backend {self.backend} {self.precision} on {self.device}: {self.reason}"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read, e.g. not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gpu_available() -> bool:
    """Whether torch sees a CUDA device (torch is imported only to ask)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # no torch or a broken CUDA set-up: the CPU it is
        return False


def features_text(flags: frozenset[str]) -> str:
    found = [f.upper() for f in (*BF16_FLAGS, *INT8_FLAGS) if f in flags]
    return ", ".join(found) if found else "no AVX512_BF16, AMX or VNNI"


def choose(backend: str = "auto", precision: str = "auto", flags: frozenset[str] | None = None) -> Choice:
    """Settings "auto" resolved for this machine; explicit settings are kept (and checked)."""
    flags = cpu_flags() if flags is None else flags
    features = features_text(flags)
    if backend == "auto":
        if gpu_available():
            # torch on the GPU: the runtimes below are CPU builds here.
            return Choice("torch", "fp32" if precision == "auto" else _check("torch", precision), "cuda", "a GPU")
        if installed("openvino"):
            backend, why = "openvino", "OpenVINO installed (fastest exact CPU runtime measured)"
        elif installed("onnxruntime"):
            backend, why = "onnx", "ONNX Runtime installed, OpenVINO not"
        else:
            backend, why = "torch", "neither OpenVINO nor ONNX Runtime installed"
    else:
        why = "backend set in the settings"
    chosen: Backend = _backend(backend)
    if precision == "auto":
        value = auto_precision(chosen, flags)
        why += f"; {value} ({features})"
    else:
        value = _check(chosen, precision)
        why += f"; precision set in the settings ({features})"
    return Choice(chosen, value, "cpu", why)


def auto_precision(backend: Backend, flags: frozenset[str]) -> Precision:
    """int8 where the CPU multiplies int8 natively and the backend can quantize (NNCF for OpenVINO);
    else bf16 where the CPU has bf16 instructions (emulated, either is slower than fp32); else fp32."""
    can_quantize = backend == "onnx" or (backend == "openvino" and installed("nncf"))
    if can_quantize and any(f in flags for f in INT8_FLAGS):
        return "int8"
    if "bf16" in SUPPORTED[backend] and any(f in flags for f in BF16_FLAGS):
        return "bf16"
    return "fp32"


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
