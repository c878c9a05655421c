"""Where an OpenVINO encoder's time goes, per operator (OpenVINO's performance counters), on the real
records; optionally as an emulated AVX2-only CPU; and how far two runs' vectors are apart.

    python benchmarks/embedding_profile.py                        # openvino int8, this CPU
    python benchmarks/embedding_profile.py --pair openvino:fp32
    python benchmarks/embedding_profile.py --emulate-avx2         # the same model capped at AVX2
    python benchmarks/embedding_profile.py --compare A.npy B.npy  # cosine of the same texts' vectors

--emulate-avx2 runs this script again with ONEDNN_MAX_CPU_ISA=AVX2 and OV_CPU_MAX_ISA=AVX2 (OpenVINO's
CPU plugin honours both; either alone leaves it inconsistent), ATEN_CPU_CAPABILITY=avx2 and
MKL_ENABLE_INSTRUCTIONS=AVX2 (torch). The table lists each kernel's name, so that one can check that no
AVX-512 kernel ran. It is an emulation on this CPU (its caches, clocks and memory), not an AVX2 machine;
ONNX Runtime honours no such cap, so it cannot be emulated this way.

Prints Markdown tables for docs/PERFORMANCE.md. No record text is printed.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, real_records, stamp

AVX2_CAPS = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OV_CPU_MAX_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def profile(pair: tuple[str, str], n: int, batch: int, threads: int, cache: Path | None) -> dict[str, Any]:
    """Per (operator type, kernel): real time summed over n real texts in batches of `batch`, one batch at
    a time on a LATENCY model compiled with PERF_COUNT (the pipelined THROUGHPUT model runs the same
    kernels on fewer threads each)."""
    import openvino as ov

    from patientinsight.embedding import openvino as ov_path
    from patientinsight.embedding.encoder import Embedder, length_batches
    from patientinsight.embedding.model import PACKAGED_MODEL

    embedder = Embedder(
        PACKAGED_MODEL, "truncate", batch_size=batch, backend=pair[0], precision=pair[1], threads=threads,
        cache_dir=cache,
    )  # fmt: skip
    embedder.encode(["warm-up"])  # makes (or reuses) the converted model
    runner = embedder._tokens.runner if embedder._tokens else None
    if not isinstance(runner, ov_path.OpenVinoRunner):
        raise SystemExit(f"{pair} is not running on OpenVINO: {embedder.active.line()}")
    model = ov.Core().compile_model(str(runner.path), "CPU", {**compile_config(runner), "PERF_COUNT": True})
    request = model.create_infer_request()
    names = [port.any_name for port in model.inputs]
    texts = real_records()["text"].tolist()[:n]
    features = embedder._tokens.tokenize(texts)
    batches = length_batches([len(ids) for ids in features["input_ids"]], batch)
    by_kernel: collections.Counter[tuple[str, str]] = collections.Counter()
    wall = 0.0
    for positions in batches:
        feeds = embedder._tokens.feeds({k: [v[i] for i in positions] for k, v in features.items()})
        started = time.perf_counter()
        request.infer({name: feeds[name] for name in names})
        wall += time.perf_counter() - started
        for item in request.profiling_info:
            if str(item.status).endswith("EXECUTED"):
                by_kernel[(item.node_type, item.exec_type)] += item.real_time.total_seconds()
    total = sum(by_kernel.values())
    return {"pair": pair, "texts": len(texts), "wall_s": wall, "counted_s": total, "kernels": by_kernel}


def compile_config(runner: Any) -> dict[str, Any]:
    """The configuration embedding.openvino compiles this precision with (LATENCY)."""
    from patientinsight.embedding.hardware import native_bf16

    precision = runner.precision
    hint = "bf16" if precision == "bf16" or (precision == "int8" and native_bf16()) else "f32"
    return {"INFERENCE_NUM_THREADS": runner.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}


def print_profile(result: dict[str, Any]) -> None:
    total, wall, n = result["counted_s"], result["wall_s"], result["texts"]
    rate = n / wall
    print(f"{result['pair'][0]} {result['pair'][1]}: {n} real texts, {wall:.2f} s wall ({rate:.1f} texts/s, "
          f"one batch at a time), {total:.2f} s counted\n")  # fmt: skip
    print("| operator | kernel | seconds | share |\n|---|---|---:|---:|")
    for (node, kernel), seconds in result["kernels"].most_common(16):
        print(f"| {node} | {kernel} | {seconds:.3f} | {seconds / total:.1%} |")
    avx512 = sorted({k for (_, k) in result["kernels"] if "avx512" in k.lower() or "amx" in k.lower()})
    print(f"\nAVX-512 or AMX kernels that ran: {', '.join(avx512) if avx512 else 'none'}")


def compare(a: Path, b: Path) -> None:
    x, y = np.load(a), np.load(b)
    cosines = (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    print(f"{a} vs {b}: {len(cosines)} vectors, cosine min {cosines.min():.6f}, mean {cosines.mean():.6f}, "
          f"share below 0.999 {(cosines < 0.999).mean():.1%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="openvino:int8", help="an OpenVINO backend:precision pair")
    parser.add_argument("--texts", type=int, default=128, help="real texts to profile")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model-cache", type=Path, default=None, help="default: the settings' model cache")
    parser.add_argument("--emulate-avx2", action="store_true", help="run capped at AVX2 (an emulation)")
    parser.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("A", "B"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    if args.emulate_avx2 and any(os.environ.get(k) != v for k, v in AVX2_CAPS.items()):
        # The caps are read once, when the runtimes load: start again with them set.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_CAPS})
    caps = {k: os.environ[k] for k in AVX2_CAPS if os.environ.get(k)}
    print(f"# embedding profile: {machine()}; {stamp()}; load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"ISA caps (an emulation on this CPU, not an AVX2 machine): {caps}\n" if caps else "")
    backend, precision = args.pair.split(":", 1)
    print_profile(profile((backend, precision), args.texts, args.batch, args.threads, args.model_cache))
    print(f"\nload after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
