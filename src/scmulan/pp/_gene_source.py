"""Where a dataset names its genes: ``var_names`` or a common ``var`` column of symbols (CELLxGENE's ``feature_name``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ._genes import GeneResolution

#: ``var`` columns that commonly hold gene symbols, in the order they are tried when ``gene_symbols`` is not given:
#: CELLxGENE / Census (``feature_name``), Scanpy's ``read_10x_mtx(var_names="gene_ids")`` (``gene_symbols``), and
#: other common spellings.
SYMBOL_COLUMNS = ("feature_name", "gene_symbols", "gene_symbol", "gene_name", "gene_names", "symbol", "symbols")


def detect_gene_column(
    var: pd.DataFrame, current: GeneResolution, resolve: Callable[[Any], GeneResolution]
) -> tuple[str, GeneResolution, str] | None:
    """The common symbol column of ``var`` that matches more model genes than ``var_names`` do, if any.

    Parameters
    ----------
    var
        ``adata.var``.
    current
        The resolution of ``var_names``.
    resolve
        Resolves a column's identifiers against the same gene set, aliases and gene table.

    Returns
    -------
    ``None`` when no such column matches more model genes; else the column, its resolution and a note for the
    report naming both counts and how to choose.
    """
    best: tuple[str, GeneResolution] | None = None
    n_best = len(current.matched_model_genes)
    for column in SYMBOL_COLUMNS:
        if column not in var.columns or not _is_text(var[column]):
            continue
        resolution = resolve(var[column].astype(object))
        if len(resolution.matched_model_genes) > n_best:
            best, n_best = (column, resolution), len(resolution.matched_model_genes)
    if best is None:
        return None
    column, resolution = best
    note = (
        f"genes read from var[{column!r}] (found automatically: it matches {n_best} model genes, var_names "
        f"{len(current.matched_model_genes)}); pass `gene_symbols=` to choose the column yourself"
    )
    return column, resolution, note


def _is_text(values: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype | pd.StringDtype)
