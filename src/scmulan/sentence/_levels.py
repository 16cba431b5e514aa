"""Per-cell expression levels: ten equal-width bins between 0 and the cell's maximum."""

from __future__ import annotations

import numpy as np

N_BINS = 10


def expression_levels(values: np.ndarray, cell_max: np.ndarray) -> np.ndarray:
    """Levels 1..10 of expressed values, exactly as the original scMulan bins them.

    The original computes, per cell, ``edges = np.linspace(0, m, 11)`` with ``m`` the cell's maximum (a float32
    scalar, so float32 edges under NumPy 2) and ``np.digitize(v, edges, right=True)``: a value in
    ``(edges[k-1], edges[k]]`` gets level ``k``, the maximum gets 10, a value exactly on an edge goes to the lower
    bin. This evaluates the same float32 edges (``k * float32(m / 10)``, the last edge ``m`` itself, as
    :func:`numpy.linspace` does) for all values at once.

    Parameters
    ----------
    values
        Expressed values (> 0), float32, any shape.
    cell_max
        The maximum of each value's cell, broadcastable to ``values``.

    Returns
    -------
    int64 levels in 1..10.
    """
    v = np.asarray(values, dtype=np.float32)
    m = np.asarray(cell_max, dtype=np.float32)
    step = (m / np.float32(N_BINS)).astype(np.float32)
    # Level = number of edges strictly below v; edge 0 (= 0) is always below, edge 10 (= m) never.
    levels = np.ones(np.broadcast_shapes(v.shape, m.shape), dtype=np.int64)
    for k in range(1, N_BINS):
        levels += (np.float32(k) * step < v).astype(np.int64)
    return levels
