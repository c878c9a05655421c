"""index.postings: chosen rows summed in place give scipy's public product of the chosen rows, bit for bit
(BM25's scores must not move by a rounding), and a wrong output array is refused."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from patientinsight.index.postings import add_weighted_rows


@pytest.mark.parametrize("seed", range(5))
def test_the_sum_in_place_is_scipys_product_to_the_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    matrix = sparse.random(300, 5_000, density=0.05, format="csr", dtype=np.float32, random_state=seed)
    matrix.data = rng.random(matrix.nnz, dtype=np.float32) / rng.integers(1, 9, matrix.nnz).astype(np.float32)
    matrix.data[matrix.indptr[7] : matrix.indptr[8]] = 0  # an empty row among the chosen ones
    matrix.eliminate_zeros()
    rows = [int(r) for r in rng.choice(300, size=12, replace=False)] + [7]
    weights = [float(w) for w in rng.random(len(rows)) * 10]
    expected = matrix[np.array(rows)].T @ np.array(weights, dtype=np.float32)
    out = np.zeros(5_000, dtype=np.float32)
    add_weighted_rows(out, matrix, rows, weights)
    assert out.dtype == expected.dtype and np.array_equal(out, expected)
    before = out.copy()  # it adds to what is there: one segment's slice of a version's scores
    add_weighted_rows(out, matrix, rows[:1], [1.0])
    assert np.array_equal(out, before + matrix[rows[0]].toarray()[0])


def test_a_wrong_output_array_is_refused() -> None:
    matrix = sparse.random(4, 10, density=0.5, format="csr", dtype=np.float32, random_state=0)
    for out in (np.zeros(10, np.float64), np.zeros(9, np.float32), np.zeros(20, np.float32)[::2]):
        with pytest.raises(ValueError, match="contiguous float32"):
            add_weighted_rows(out, matrix, [0], [1.0])
