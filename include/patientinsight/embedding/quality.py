"""The quality rule of the measured choice: a pair may encode only if its vectors of the check texts
agree with fp32 at least as well as vectors whose retrieval quality was measured to hold.

Where the bounds come from (docs/PERFORMANCE.md, "The measured choice"): the shipped retriever's
leave-one-out MRR stayed within 0.005 of fp32, on tune and holdout and in both query modes, for the
int8 models listed in INT8_STUDIED, on the real records. Retrieval quality cannot be measured at run
time (it needs the evaluation records, which no choice may see), so the rule asks for less than MRR and
more than nothing: on the generated check texts, the lowest and the mean cosine against fp32 must be at
least the worst seen for those studied models on the same texts (rounded down to the 0.001). Vectors no
further from fp32 than ones whose MRR held are allowed; anything further (another kernel, a broken
export, a new quantization) is refused until it has been studied and added here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patientinsight.embedding.hardware import Precision

# The exact class (fp32 on any runtime, bf16): interchangeable with torch fp32 (same_embedding).
EXACT_MIN_COSINE = 0.999
# int8: the worst over INT8_STUDIED on the check texts (embedding.measure.check_texts), rounded down.
INT8_MIN_COSINE = 0.987
INT8_MEAN_COSINE = 0.991
# Each studied model's agreement on the check texts (batch size 32, on the date given): its MRR was measured on
# the real records (docs/PERFORMANCE.md). ONNX Runtime's int8 scales follow the batch, so its vectors move
# with the batch size; under another batch size it may fall outside the bound, and is then refused.
INT8_STUDIED = (
    "openvino int8 (NNCF), AVX-512 VNNI (2026-12-01 MRR): lowest 0.99456, mean 0.99625",
    "onnx int8 (dynamic), AVX-512 VNNI (2026-12-01 MRR): lowest 0.98971, mean 0.99267",
    # AVX2's int8 kernels give other vectors (lowest cosine 0.9951, mean 0.9972 against VNNI's, real records):
    # studied under an ISA cap on the AVX-512 CPU (an emulation); holdout short MRR 0.0042 below fp32.
    "openvino int8 (NNCF), AVX2 emulated (2026-12-02 MRR): lowest 0.99051, mean 0.99330",
    # On a real AVX2-only CPU (2-core AMD EPYC, no AVX-512, no VNNI), 2026-12-07, the shipped retriever's
    # MRR on the real records: ONNX int8 0.0001 below fp32 at most (holdout short), OpenVINO int8 0.0042
    # (holdout short); both within 0.005 on tune and holdout, both query modes.
    "onnx int8 (dynamic), AVX2 (2026-12-07 MRR): lowest 0.98722, mean 0.99134",
    "openvino int8 (NNCF), AVX2 (2026-12-07 MRR): lowest 0.98995, mean 0.99334",
)


@dataclass(frozen=True)
class Agreement:
    cosine_min: float
    cosine_mean: float


def agreement(vectors: np.ndarray, reference: np.ndarray) -> Agreement:
    """Cosine of each text's vector with its fp32 vector (both normalized by the encoder)."""
    a = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    b = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    cosines = (a * b).sum(axis=1)
    return Agreement(float(cosines.min()), float(cosines.mean()))


def verdict(precision: Precision, seen: Agreement) -> tuple[bool, str]:
    """Whether vectors with this agreement may be used for this precision, and why (for the table)."""
    if precision == "int8":
        if seen.cosine_min < INT8_MIN_COSINE:
            return False, f"refused: lowest cosine {seen.cosine_min:.4f} < {INT8_MIN_COSINE} (studied int8)"
        if seen.cosine_mean < INT8_MEAN_COSINE:
            return False, f"refused: mean cosine {seen.cosine_mean:.4f} < {INT8_MEAN_COSINE} (studied int8)"
        return True, "within the studied int8 bound"
    if seen.cosine_min < EXACT_MIN_COSINE:
        return False, f"refused: lowest cosine {seen.cosine_min:.4f} < {EXACT_MIN_COSINE} (exact)"
    return True, "exact"
