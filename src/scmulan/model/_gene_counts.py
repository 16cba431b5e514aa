"""How many genes a generated cell has: gene counts of real training cells, per condition.

A next-entity model's own stop is nearly memoryless: its cells' gene counts vary about 2.6 times as much as real
cells' (benchmarks/README.md, "Decoding sweep"). So ``generate`` sets each cell's gene count to one drawn from the
training cells of the requested kind, as scVI draws a library size from the cells of a batch. The table keeps, for
all training cells (row 0) and for the cells carrying each metadata token (row ``1 + token id``), the number of
cells (column 0) and the quantiles 0, 1, …, 100 % of their gene counts (columns 1…101): a draw is the inverse CDF
at a uniform number.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from scipy import sparse

#: Quantiles stored per row (0 %, 1 %, …, 100 %).
N_QUANTILES = 101


def expressed_genes(X: sparse.csr_matrix, col_token: np.ndarray) -> np.ndarray:
    """Number of model genes with a positive value in each row of ``X`` (columns with ``col_token >= 0``)."""
    X = sparse.csr_matrix(X)
    positive = (X.data > 0) & (col_token[X.indices] >= 0)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    return np.bincount(rows[positive], minlength=X.shape[0]).astype(np.int64)


def recording_gene_counts(
    chunks: Iterable[sparse.csr_matrix], col_token: np.ndarray, into: list[np.ndarray]
) -> Iterator[sparse.csr_matrix]:
    """Pass ``chunks`` through, appending each chunk's per-cell gene counts to ``into`` (one pass over the data)."""
    for X in chunks:
        into.append(expressed_genes(X, col_token))
        yield X


def gene_count_table(counts: np.ndarray, metadata: np.ndarray, n_tokens: int) -> np.ndarray:
    """The ``(1 + n_tokens, 1 + N_QUANTILES)`` float32 table of the module docstring.

    Parameters
    ----------
    counts
        Genes expressed in each training cell.
    metadata
        Metadata token ids of the same cells, ``(n_cells, n_fields)``, ``-1`` where unknown.
    n_tokens
        Vocabulary size.
    """
    counts = np.asarray(counts, dtype=np.float64)
    table = np.zeros((1 + n_tokens, 1 + N_QUANTILES), dtype=np.float32)
    if len(counts) == 0:
        return table
    metadata = np.asarray(metadata, dtype=np.int64).reshape(len(counts), -1)
    q = np.linspace(0.0, 1.0, N_QUANTILES)
    table[0, 0], table[0, 1:] = len(counts), np.quantile(counts, q)
    tokens = metadata.ravel()
    cells = np.repeat(np.arange(len(counts)), metadata.shape[1])
    known = tokens >= 0
    tokens, cells = tokens[known], cells[known]
    order = np.argsort(tokens, kind="stable")
    tokens, cells = tokens[order], cells[order]
    unique, starts = np.unique(tokens, return_index=True)
    for token, group in zip(unique, np.split(cells, starts[1:]), strict=True):  # one step per category
        table[1 + token, 0], table[1 + token, 1:] = len(group), np.quantile(counts[group], q)
    return table


def cells_per_token(table: np.ndarray, n_tokens: int) -> np.ndarray:
    """``(n_tokens,)`` training cells carrying each metadata token: column 0 of a :func:`gene_count_table`."""
    out = np.zeros(n_tokens, dtype=np.float64)
    rows = min(n_tokens, table.shape[0] - 1)
    out[:rows] = table[1 : 1 + rows, 0]
    return out


def draw_gene_counts(table: np.ndarray, conditions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One gene count per row of ``conditions``, from the training cells of its narrowest condition.

    Parameters
    ----------
    table
        A :func:`gene_count_table`.
    conditions
        Metadata token ids ``(n, n_fields)`` of the cells to generate, ``-1`` where unconditioned.
    rng
        Random generator (one uniform number per cell).

    Returns
    -------
    ``(n,)`` integers: among a row's tokens, the one fewest training cells carry (e.g. a fine cell type rather than
    its organ) gives the distribution; a row without a token seen in training draws from all training cells. ``-1``
    everywhere when the table holds no cell.
    """
    n = conditions.shape[0]
    if table[0, 0] == 0:
        return np.full(n, -1, dtype=np.int64)
    conditions = np.asarray(conditions, dtype=np.int64).reshape(n, -1)
    rows = np.where(conditions >= 0, conditions + 1, 0)
    size = np.where(conditions >= 0, table[rows, 0], 0.0)
    size = np.where(size > 0, size, np.inf)
    row = np.zeros(n, dtype=np.int64)
    if conditions.shape[1]:
        narrowest = np.argmin(size, axis=1)
        found = np.isfinite(size[np.arange(n), narrowest])
        row[found] = rows[np.arange(n), narrowest][found]
    position = rng.random(n) * (N_QUANTILES - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, N_QUANTILES - 1)
    quantiles = table[row, 1:].astype(np.float64)
    value = quantiles[np.arange(n), low] * (1 - (position - low)) + quantiles[np.arange(n), high] * (position - low)
    return np.rint(value).astype(np.int64)


def extend_gene_count_table(table: np.ndarray | None, n_tokens: int) -> np.ndarray | None:
    """``table`` with empty rows for tokens added to the vocabulary (fine-tuning on new categories)."""
    if table is None or table.shape[0] >= 1 + n_tokens:
        return table
    pad = np.zeros((1 + n_tokens - table.shape[0], table.shape[1]), dtype=np.float32)
    return np.concatenate([table, pad])
