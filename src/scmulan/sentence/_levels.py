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
    shape = np.broadcast_shapes(v.shape, step.shape)
    v, step = (np.broadcast_to(a, shape).ravel() for a in (v, step))  # 1-d (a copy only where broadcast)
    # Level = 1 + the number of edges k * step (k = 1..9, float32 products) strictly below v. The float32 quotient
    # v / step gives it up to one: only an edge within a few ulps of v can land on the wrong side, and at most one
    # edge is that close. So take ceil(v / step) in 1..10 and check the two edges around it exactly.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.ceil(v / step)
    np.clip(q, 1, N_BINS, out=q)
    q[np.isnan(q)] = 1  # 0 / 0 (a zero value in a cell of zeros: no edge is below it)
    edge = (q - np.float32(1)) * step  # the edge just below level q ...
    levels = q.astype(np.int64)
    levels -= (q > 1) & (edge >= v)  # ... is not below v: one level lower
    np.multiply(q, step, out=edge)  # the edge at level q ...
    levels += (q < N_BINS) & (edge < v)  # ... is below v: one level higher
    return levels.reshape(shape)
