"""``normalize_total`` + ``log1p`` as one array kernel: new float32 output, bounded temporaries."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

# Rows processed at once; each chunk's temporaries are float64 copies of its values.
_CHUNK_ROWS = 10_000


def normalize_log1p(X: Any, *, target_sum: float = 1e4) -> np.ndarray | sparse.spmatrix | sparse.sparray:
    """Scale every cell to ``target_sum`` total counts, then apply ``log1p``; a new float32 matrix.

    Equivalent to ``sc.pp.normalize_total(adata, target_sum=target_sum)`` followed by ``sc.pp.log1p``.
    Row sums and scaling are computed in float64 and the result is cast to float32. A cell with zero
    total stays all zero (no division by zero). ``X`` is never modified.

    Parameters
    ----------
    X
        Non-negative cells × genes matrix, dense or sparse.
    target_sum
        Total of each cell after normalisation.

    Returns
    -------
    Sparse input gives a CSR matrix (a ``csr_array`` for sparse arrays, with copied index arrays);
    dense input gives a dense float32 array.
    """
    if sparse.issparse(X):
        return _normalize_log1p_csr(X, target_sum)
    X = np.asarray(X)
    out = np.empty(X.shape, dtype=np.float32)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        block = X[start : start + _CHUNK_ROWS].astype(np.float64)
        totals = block.sum(axis=1)
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        out[start : start + _CHUNK_ROWS] = np.log1p(block * scale[:, None])
    return out


def _normalize_log1p_csr(X: Any, target_sum: float) -> sparse.spmatrix | sparse.sparray:
    is_array = isinstance(X, getattr(sparse, "sparray", ()))
    csr = X.tocsr()
    if not csr.has_canonical_format:
        # duplicate entries must be summed before log1p (log1p(a) + log1p(b) != log1p(a + b))
        csr = csr.copy()
        csr.sum_duplicates()
    indptr = csr.indptr
    data = np.empty(csr.data.shape, dtype=np.float32)
    for start in range(0, csr.shape[0], _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, csr.shape[0])
        lo, hi = indptr[start], indptr[stop]
        values = csr.data[lo:hi].astype(np.float64)
        row_of = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))  # chunk row of each value
        totals = np.bincount(row_of, weights=values, minlength=stop - start)
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        data[lo:hi] = np.log1p(values * scale[row_of])
    cls = sparse.csr_array if is_array else sparse.csr_matrix
    # copied index arrays: the result must not share structure with the counts kept beside it
    return cls((data, csr.indices.copy(), indptr.copy()), shape=csr.shape)
