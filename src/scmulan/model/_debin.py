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


def debin(
    table: np.ndarray | None, ids: np.ndarray, levels: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Log-normalised values of (gene id, level) pairs; ``level / 10`` (fraction of the cell maximum) without a table.

    Parameters
    ----------
    table
        The de-binning table of :func:`debinning_table`, or ``None``.
    ids, levels
        Gene token ids and their levels.
    rng
        Draw each value within its level's range instead of taking the level's mean: level ``k`` spans
        ``((k - 1) / 10, k / 10]`` of a cell's maximum, so the mean ``table[g, k]`` (at the bin's centre,
        ``(k - 0.5) / 10``) is scaled by ``(k - 1 + u) / (k - 0.5)`` with ``u`` uniform in ``(0, 1]``, never above the
        mean at level 10 (the cell's maximum itself). ``None``: the mean (the seed's behaviour).
    """
    levels = np.asarray(levels, dtype=np.int64)
    if table is None:
        return (levels / 10.0).astype(np.float32)
    values = table[np.asarray(ids, dtype=np.int64), levels]
    if rng is None:
        return values
    k = levels.astype(np.float64)
    u = 1.0 - rng.random(len(levels))  # (0, 1]
    factor = np.where(k > 0, (k - 1 + u) / np.maximum(k - 0.5, 0.5), 0.0)
    factor = np.where(k >= 10, np.minimum(factor, 1.0), factor)
    return (values * factor).astype(np.float32)
