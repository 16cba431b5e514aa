"""Index arithmetic for ragged arrays (values concatenated, ``offsets`` of length ``n + 1``)."""

from __future__ import annotations

import numpy as np


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """``(n + 1,)`` int64 offsets of consecutive runs of the given lengths.

    Parameters
    ----------
    lengths
        ``(n,)`` non-negative run lengths (e.g. genes per cell).

    Returns
    -------
    ``offsets`` with ``offsets[0] == 0`` and run ``i`` at ``values[offsets[i]:offsets[i + 1]]``.
    """
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def take(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather the runs ``rows`` (in that order): the source index of every value, and the new offsets."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = np.diff(offsets)[rows]
    new_offsets = offsets_from_lengths(lengths)
    local = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], lengths)
    return np.repeat(offsets[rows], lengths) + local, new_offsets
