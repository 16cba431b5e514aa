"""Gene segments: the expressed model genes of each cell with their levels, from CSR rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from scmulan._warnings import warn

from . import _ragged as ragged
from ._levels import expression_levels

if TYPE_CHECKING:
    from anndata import AnnData

    from scmulan.vocab import Vocabulary

GeneOrder = Literal["legacy", "shuffle", "ascending"]


def gene_token_ids(adata: AnnData, vocab: Vocabulary, *, gene_symbols: str | None = None) -> np.ndarray:
    """Token id of each variable of ``adata`` (``-1`` for variables that are not model genes).

    Identifiers come from ``var["scmulan_gene"]`` when :func:`scmulan.pp.prepare` wrote it, else from the
    ``gene_symbols`` column of ``var``, else from ``var_names``. When ``prepare`` matched the data to *another*
    gene set, its column misses this vocabulary's genes that the other set lacks: variables for which the column
    gives no model gene (and that ``prepare`` did not mark ``"duplicate"``) are then looked up by their own
    identifier, as long as no other variable already maps to that gene, with a warning giving the count.

    Parameters
    ----------
    adata
        The cells.
    vocab
        The model's vocabulary.
    gene_symbols
        ``var`` column with the identifiers, if not the ``var_names``.
    """
    if gene_symbols is not None and gene_symbols not in adata.var:
        msg = f"`gene_symbols={gene_symbols!r}` is not a column of `adata.var` (columns: {list(adata.var.columns)})."
        raise ValueError(msg)
    own = adata.var[gene_symbols] if gene_symbols is not None else pd.Series(adata.var_names, index=adata.var_names)
    prepared = "scmulan_gene" in adata.var
    names = adata.var["scmulan_gene"] if prepared else own
    gene_ids = np.asarray(vocab.gene_ids, dtype=np.int64)
    genes = pd.Index(vocab.genes)

    def lookup(values: pd.Series) -> np.ndarray:
        position = genes.get_indexer(values.astype("string").fillna("").to_numpy())  # -1 where absent
        return np.where(position >= 0, gene_ids[position], -1)

    ids = lookup(names)
    mapped = ids[ids >= 0]
    if len(np.unique(mapped)) != len(mapped):
        n_dup = len(mapped) - len(np.unique(mapped))
        msg = (
            f"{n_dup} variables map to a model gene that another variable already maps to; a gene may enter a "
            "sentence once only. Run `scmulan.pp.prepare(adata, model)` to resolve duplicated gene names."
        )
        raise ValueError(msg)
    if prepared and "scmulan_gene_status" in adata.var:
        # a column prepared for another gene set: fall back to the variables' own identifiers where it gives nothing
        status = adata.var["scmulan_gene_status"].astype("string").fillna("").to_numpy()
        fallback = np.where((ids < 0) & (status != "duplicate"), lookup(own), -1)
        fallback[np.isin(fallback, mapped)] = -1  # a gene another variable already has stays with it
        _, first = np.unique(fallback, return_index=True)
        keep = np.zeros(len(fallback), dtype=bool)
        keep[first] = True
        fallback[~keep] = -1  # the same gene named twice: the first variable gets it
        recovered = np.flatnonzero(fallback >= 0)
        if len(recovered):
            ids[recovered] = fallback[recovered]
            source = "var_names" if gene_symbols is None else f"var[{gene_symbols!r}]"
            examples = [str(own.iloc[i]) for i in recovered[:5]]
            msg = (
                f"`var['scmulan_gene']` (written by `scmulan.pp.prepare`) misses {len(recovered)} of the model's genes "
                f"that {source} name (e.g. {examples}): it was prepared for another gene set. They are read from "
                f"{source}; run `scmulan.pp.prepare(adata, model)` to match the data to this model's genes."
            )
            warn(msg, UserWarning)
    return ids


@dataclass
class GeneSegments:
    """Expressed model genes of ``n`` cells, concatenated (cell ``i`` is ``[offsets[i]:offsets[i+1]]``).

    Attributes
    ----------
    ids
        Gene token ids (int64).
    levels
        Their levels 1..10 (int64).
    offsets
        ``(n + 1,)`` int64.
    n_truncated
        Number of cells that lost genes to ``max_genes``.
    values
        The expression values the levels were binned from (float32), when built by :func:`gene_segments`.
    """

    ids: np.ndarray
    levels: np.ndarray
    offsets: np.ndarray
    n_truncated: int = 0
    values: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        """Number of genes per cell."""
        return np.diff(self.offsets)

    def subset(self, rows: np.ndarray) -> GeneSegments:
        """The segments of cells ``rows``, in that order."""
        src, offsets = ragged.take(self.offsets, rows)
        values = self.values[src] if self.values is not None else None
        return GeneSegments(self.ids[src], self.levels[src], offsets, self.n_truncated, values)


def _row_of_entries(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))


def _by_value(rows: np.ndarray, val: np.ndarray, tok: np.ndarray) -> np.ndarray:
    """Entries grouped by cell (ascending), within a cell highest value first, ties by ascending token.

    One stable argsort of an int64 key ``(row, bits of -value, token)``: for positive float32 values the bit
    pattern grows with the value, so ``0x7FFFFFFF - bits`` orders them from the highest down. This is ~9x faster
    than ``np.lexsort((tok, -val, rows))``, which it falls back to when the key would not fit in 63 bits.
    """
    tok = tok.astype(np.int64, copy=False)
    bits_row = int(rows.max()).bit_length() if len(rows) else 0
    bits_tok = int(tok.max()).bit_length() if len(tok) else 0
    if bits_row + 31 + bits_tok > 63:
        return np.lexsort((tok, -val, rows))
    descending = np.int64(0x7FFFFFFF) - np.ascontiguousarray(val, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.argsort((rows << (31 + bits_tok)) | (descending << bits_tok) | tok, kind="stable")


def gene_segments(
    X: sparse.spmatrix | sparse.sparray | np.ndarray,
    col_token: np.ndarray,
    *,
    order: GeneOrder = "legacy",
    max_genes: int | None = None,
    rng: np.random.Generator | None = None,
) -> GeneSegments:
    """Build the gene segment of every row of ``X`` at once.

    A gene enters when its value is > 0 and its column is a model gene. Levels are binned per cell against the
    maximum over the cell's expressed model genes (:func:`expression_levels`).

    Parameters
    ----------
    X
        Log-normalised expression of a chunk of cells (CSR preferred; a dense chunk is accepted).
    col_token
        Token id per column of ``X``, ``-1`` for non-model genes (see :func:`gene_token_ids`).
    order
        ``"legacy"``: descending token id, i.e. the reverse of the gene-set order (the original scMulan's prompt
        order); ``"ascending"``: gene-set order; ``"shuffle"``: random order per cell (training; needs ``rng``).
    max_genes
        Keep at most this many genes per cell: the most highly expressed (ties broken by gene order).
    rng
        Random generator for ``"shuffle"``.
    """
    X = sparse.csr_matrix(X) if not sparse.issparse(X) else X.tocsr()
    n = X.shape[0]
    data = np.asarray(X.data, dtype=np.float32)
    tok_all = col_token[X.indices]
    keep = (data > 0) & (tok_all >= 0)
    rows = _row_of_entries(X.indptr)[keep]
    tok = tok_all[keep]
    val = data[keep]

    cell_max = np.zeros(n, dtype=np.float32)
    np.maximum.at(cell_max, rows, val)
    lvl = expression_levels(val, cell_max[rows])

    n_truncated = 0
    if max_genes is not None:
        counts = np.bincount(rows, minlength=n)
        long = counts > max_genes
        n_truncated = int(long.sum())
        if n_truncated:
            # Rank the entries of the long cells only, highest value first (ties: lower token first), and drop
            # those past max_genes; the kept entries stay in their original order.
            sel = np.flatnonzero(long[rows])
            by_value = _by_value(rows[sel], val[sel], tok[sel])
            c = counts[long]
            rank = np.arange(len(sel)) - np.repeat(np.cumsum(c) - c, c)
            keep = np.ones(len(rows), dtype=bool)
            keep[sel[by_value[rank >= max_genes]]] = False
            rows, tok, lvl, val = rows[keep], tok[keep], lvl[keep], val[keep]

    # One stable argsort of a combined int64 key (cell first) is 2-3x faster than np.lexsort on two keys.
    span = int(tok.max()) + 1 if len(tok) else 1
    if order == "legacy":
        perm = np.argsort(rows * span + (span - 1 - tok), kind="stable")
    elif order == "ascending":
        perm = np.argsort(rows * span + tok, kind="stable")
    elif order == "shuffle":
        if rng is None:
            msg = "`order='shuffle'` needs a random generator `rng`."
            raise ValueError(msg)
        perm = np.argsort((rows << 32) | rng.integers(0, 2**32, size=len(tok), dtype=np.int64), kind="stable")
    else:
        msg = f"`order` must be 'legacy', 'ascending' or 'shuffle', got {order!r}."
        raise ValueError(msg)
    offsets = ragged.offsets_from_lengths(np.bincount(rows, minlength=n))
    return GeneSegments(ids=tok[perm], levels=lvl[perm], offsets=offsets, n_truncated=n_truncated, values=val[perm])


def descending_within(genes: GeneSegments, rows: np.ndarray) -> GeneSegments:
    """The segments with the genes of cells ``rows`` (a boolean mask) reordered from the most to the least expressed.

    The sort is stable, so genes of equal expression keep their order (random for shuffled training segments) and
    cells outside ``rows`` are unchanged. Uses :attr:`GeneSegments.values` when present, else the levels.

    Parameters
    ----------
    genes
        Gene segments of ``n`` cells.
    rows
        ``(n,)`` boolean: the cells to reorder.
    """
    key = genes.values if genes.values is not None else genes.levels
    cell = np.repeat(np.arange(len(genes.offsets) - 1), genes.lengths)
    minus = np.where(np.asarray(rows, dtype=bool)[cell], -np.asarray(key, dtype=np.float64), 0.0)
    perm = np.lexsort((minus, cell))  # stable: by cell, then by descending value where reordered
    values = genes.values[perm] if genes.values is not None else None
    return GeneSegments(genes.ids[perm], genes.levels[perm], genes.offsets, genes.n_truncated, values)


def warn_truncated(
    n_truncated: int,
    n_cells: int,
    max_genes: int,
    *,
    cells: str = "cells",
    hint: str | None = None,
) -> None:
    """Warn with the number of cells whose gene segment was cut to ``max_genes``; nothing when there are none.

    Parameters
    ----------
    n_truncated
        Cells that express more than ``max_genes`` model genes (:attr:`GeneSegments.n_truncated`, summed).
    n_cells
        Cells looked at.
    max_genes
        Genes a sentence keeps at most.
    cells
        What the cells are, in the message (``"N of M <cells> express …"``).
    hint
        What to do about it, appended in parentheses.
    """
    if n_truncated:
        warn(
            f"{n_truncated} of {n_cells} {cells} express more than {max_genes} model genes; their sentences keep the "
            f"{max_genes} most highly expressed genes{f' ({hint})' if hint else ''}.",
            UserWarning,
        )
