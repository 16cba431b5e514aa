"""De-binning: mean log-normalised expression of every gene at every level, learned from training data.

Generated cells come out as levels 1..10 (bins relative to each cell's maximum). To return them on the scale of
the training data, level ``k`` of gene ``g`` is replaced by the mean log-normalised value that gene ``g`` had
when binned to level ``k`` in the training cells. A (gene, level) pair never seen takes the mean value of that
level over all genes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import sparse

from scmulan.sentence import gene_segments


def debinning_table(chunks: Iterable[sparse.csr_matrix], col_token: np.ndarray, n_tokens: int) -> np.ndarray:
    """Mean value per (entity id, level): a ``(n_tokens, 11)`` float32 table, column 0 (not expressed) zero.

    Parameters
    ----------
    chunks
        Log-normalised expression, CSR chunks of cells.
    col_token
        Token id per column (``-1`` for non-model genes).
    n_tokens
        Vocabulary size (rows of the table; rows of non-gene entities are unused).
    """
    sums = np.zeros((n_tokens, 11), dtype=np.float64)
    counts = np.zeros((n_tokens, 11), dtype=np.int64)
    for X in chunks:
        seg = gene_segments(X, col_token, order="ascending")
        np.add.at(sums, (seg.ids, seg.levels), seg.values)
        np.add.at(counts, (seg.ids, seg.levels), 1)
    n_level = counts.sum(0)
    level_mean = sums.sum(0) / np.maximum(n_level, 1)  # per level over all genes
    # A level never observed in the data (level 1 usually: one count already exceeds a tenth of a cell's maximum
    # after log-normalisation) takes a value interpolated between the observed levels (and 0 at level 0).
    seen = np.flatnonzero(n_level[1:] > 0) + 1
    if len(seen):
        known_levels = np.concatenate([[0], seen])
        known_values = np.concatenate([[0.0], level_mean[seen]])
        level_mean = np.interp(np.arange(11), known_levels, known_values)
    table = np.where(counts > 0, sums / np.maximum(counts, 1), level_mean[None, :])
    table[:, 0] = 0.0  # level 0 means not expressed
    return table.astype(np.float32)


def debin(table: np.ndarray | None, ids: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Log-normalised values of (gene id, level) pairs; ``level / 10`` (fraction of the cell maximum) without a table."""
    levels = np.asarray(levels, dtype=np.int64)
    if table is None:
        return (levels / 10.0).astype(np.float32)
    return table[np.asarray(ids, dtype=np.int64), levels]
