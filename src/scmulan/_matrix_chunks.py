"""Reading the stored values of an expression matrix in bounded chunks, never densifying a sparse one.

Works on numpy arrays, scipy sparse matrices/arrays, h5py datasets and anndata's backed sparse datasets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import sparse

#: Stored values handled at once (bounds the temporary arrays of a check).
CHUNK_VALUES = 1 << 22


def rows_to_check(n_rows: int, max_rows: int | None) -> np.ndarray | None:
    """Evenly spaced, sorted row indices (deterministic), or ``None`` for all rows."""
    if max_rows is None or n_rows <= max_rows:
        return None
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def _as_readable_sparse(X: Any) -> Any:
    if X.format not in {"csr", "csc", "coo"}:
        return X.tocsr()
    return X


def blocks(X: Any, rows: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(values, columns)`` of the rows ``rows`` (all if ``None``), a bounded chunk at a time.

    ``columns`` is the column index of each stored value; for a dense block ``values`` is the 2-D block itself
    and ``columns`` is ``None``.
    """
    if sparse.issparse(X):
        X = _as_readable_sparse(X)
        if rows is None:
            # every stored value, regardless of layout: slices of `.data` are views, no copy
            data = X.data
            for start in range(0, data.size, CHUNK_VALUES):
                stop = start + CHUNK_VALUES
                if X.format == "csr":
                    cols = X.indices[start:stop]
                elif X.format == "coo":
                    cols = X.col[start:stop]
                else:  # csc: the column of a stored value is where its position falls in indptr
                    cols = np.searchsorted(X.indptr, np.arange(start, min(stop, data.size)), side="right") - 1
                yield data[start:stop], cols
            return
        if X.format == "coo":
            X = X.tocsr()
    n_cols = X.shape[1]
    per_chunk = max(1, CHUNK_VALUES // max(1, n_cols))
    # in-memory sparse, dense arrays, h5py datasets and anndata's backed sparse datasets: read row blocks
    starts = range(0, X.shape[0] if rows is None else rows.size, per_chunk)
    for start in starts:
        chunk = X[start : start + per_chunk] if rows is None else X[rows[start : start + per_chunk]]
        if sparse.issparse(chunk):
            chunk = sparse.csr_matrix(chunk)
            chunk.sum_duplicates()
            yield np.asarray(chunk.data), chunk.indices
        else:
            yield np.atleast_2d(np.asarray(chunk)), None


def row_sample(X: Any, rows: np.ndarray | None) -> sparse.csr_matrix:
    """The rows ``rows`` (all if ``None``) as a float64 CSR matrix with no explicit zeros, read in bounded chunks."""
    if sparse.issparse(X):
        X = _as_readable_sparse(X)
        if X.format == "coo":
            X = X.tocsr()
        sample = X if rows is None else X[rows]
        sample = sparse.csr_matrix(sample, dtype=np.float64, copy=True)
    else:
        n_cols = X.shape[1]
        per_chunk = max(1, CHUNK_VALUES // max(1, n_cols))
        index = np.arange(X.shape[0]) if rows is None else rows
        parts = []
        for start in range(0, index.size, per_chunk):
            block = X[index[start : start + per_chunk]] if rows is not None else X[start : start + per_chunk]
            parts.append(sparse.csr_matrix(block.toarray() if sparse.issparse(block) else np.asarray(block)))
        sample = sparse.csr_matrix(sparse.vstack(parts), dtype=np.float64)
    sample.sum_duplicates()
    sample.eliminate_zeros()
    return sample
