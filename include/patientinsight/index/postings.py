"""Weighted sums of chosen rows of a CSR matrix (BM25's terms x records tf parts), added where the rows
lie. scipy's `matrix[rows].T @ weights` first copies the chosen rows (a short query's common terms reach
1.9 million postings at 250,000 records) and then sums the copy; this runs the same C loop over the rows
in place, in the same order, so the sums are the same to the bit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

# csc_matvec (out += A @ x for a CSC matrix A) is the kernel scipy's own product of `matrix[rows].T` runs.
# It is not public API: scipy is pinned in requirements.txt, and tests/unit/index/test_postings.py holds
# it to the public product bit for bit.
from scipy.sparse import _sparsetools


def add_weighted_rows(
    out: np.ndarray, matrix: sparse.csr_matrix, rows: Sequence[int], weights: Sequence[float]
) -> None:
    """out += sum over i of weights[i] * matrix[rows[i]]; out is float32 with one value per column."""
    if out.dtype != np.float32 or out.shape != (matrix.shape[1],) or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous float32 array with one value per column")
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    for row, weight in zip(rows, weights, strict=True):
        start, end = int(indptr[row]), int(indptr[row + 1])
        if end > start:  # one row as a one-column CSC matrix, over the row's own postings (views, no copy)
            bounds = np.array([0, end - start], dtype=indices.dtype)
            factor = np.array([weight], dtype=data.dtype)
            _sparsetools.csc_matvec(len(out), 1, bounds, indices[start:end], data[start:end], factor, out)
