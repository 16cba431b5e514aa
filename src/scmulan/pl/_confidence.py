"""Distribution of the prediction confidence written by :func:`scmulan.tl.annotate` or ``predict_metadata``."""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scmulan._anndata import get_modality

from ._utils import DOC_RETURNS, DOC_SHOW_SAVE_AX, doc_params, finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData


def _confidence_values(adata: AnnData, key: str, groupby: str | None) -> tuple[pd.Series, pd.Series | None]:
    """The confidence column (float) and the grouping column, checked."""
    column = f"{key}_confidence"
    if column not in adata.obs:
        available = ", ".join(repr(c) for c in adata.obs.columns if c.endswith("_confidence")) or "none"
        msg = (
            f"`adata.obs[{column!r}]` not found (confidence columns: {available}). "
            f"Run scmulan.tl.annotate(adata, model) first, or scmulan.tl.predict_metadata(adata, model, ...) "
            "for `scmulan_<field>_confidence`; pass `key=` without the `_confidence` suffix."
        )
        raise ValueError(msg)
    values = adata.obs[column]
    if not pd.api.types.is_numeric_dtype(values):
        msg = f"`adata.obs[{column!r}]` must be numeric, not {values.dtype}."
        raise ValueError(msg)
    groups = None
    if groupby is not None:
        if groupby not in adata.obs:
            msg = f"`adata.obs[{groupby!r}]` not found; pass an obs column as `groupby=`, e.g. {key + '_fine'!r}."
            raise ValueError(msg)
        groups = adata.obs[groupby]
    return values.astype(float), groups


def _fraction_below(values: np.ndarray, threshold: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.mean(finite < threshold)) if finite.size else float("nan")


@doc_params(doc_show_save_ax=DOC_SHOW_SAVE_AX, doc_returns=DOC_RETURNS)
def confidence(
    adata: AnnData | MuData,
    key: str = "scmulan",
    *,
    groupby: str | None = None,
    threshold: float | None = None,
    bins: int = 30,
    kind: Literal["box", "violin"] = "box",
    mod: str = "rna",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Distribution of the prediction confidence, overall or per group.

    Draws a histogram of ``obs[f"{key}_confidence"]``, or one box (or violin) per group of ``obs[groupby]``
    (e.g. per predicted fine type). Cells with a missing (NaN) confidence are left out and counted in the
    legend. A ``threshold`` draws a line and reports the fraction of cells below it.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality ``mod`` holds the predictions.
    key
        Prefix of the confidence column: ``"scmulan"`` for the cell type confidence of
        :func:`scmulan.tl.annotate`, ``"scmulan_<field>"`` for a field of ``predict_metadata``.
    groupby
        Column of ``obs`` to split the cells by, e.g. ``"scmulan_fine"``.
    threshold
        A confidence cut-off to mark, e.g. the one below which labels are set to unknown.
    bins
        Number of histogram bins (without ``groupby``).
    kind
        Per-group plot with ``groupby``:

        - ``"box"``: box plots.
        - ``"violin"``: violin plots.
    mod
        MuData modality; ignored for AnnData input.
    {doc_show_save_ax}

    Returns
    -------
    {doc_returns}

    Examples
    --------
    >>> scmulan.pl.confidence(adata, threshold=0.5)  # doctest: +SKIP
    >>> scmulan.pl.confidence(adata, groupby="scmulan_fine")  # doctest: +SKIP
    """
    if kind not in {"box", "violin"}:
        msg = f"`kind` must be 'box' or 'violin', not {kind!r}."
        raise ValueError(msg)
    adata = get_modality(adata, mod)
    values, groups = _confidence_values(adata, key, groupby)
    array = values.to_numpy()
    finite = np.isfinite(array)
    n_missing = int((~finite).sum())
    column = f"{key}_confidence"

    if groups is None:
        fig, ax, owns = new_axes(ax, figsize=(5, 3.5))
        label = f"{int(finite.sum())} cells" + (f" ({n_missing} without confidence)" if n_missing else "")
        ax.hist(array[finite], bins=bins, color="tab:blue", alpha=0.8, label=label)
        ax.set_xlabel(column)
        ax.set_ylabel("cells")
        if threshold is not None:
            frac = _fraction_below(array, threshold)
            ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}: {frac:.1%} below")
    else:
        names = groups.cat.categories if isinstance(groups.dtype, pd.CategoricalDtype) else pd.unique(groups.dropna())
        data = [array[(groups == name).to_numpy() & finite] for name in names]
        kept = [(str(name), d) for name, d in zip(names, data, strict=True) if d.size]
        fig, ax, owns = new_axes(ax, figsize=(max(4.0, 0.45 * len(kept) + 2), 4))
        labels = [name for name, _ in kept]
        positions = np.arange(1, len(kept) + 1)
        if kind == "box":
            ax.boxplot([d for _, d in kept], positions=positions, showfliers=False)
        elif kept:
            ax.violinplot([d for _, d in kept], positions=positions, showmedians=True)
        ax.set_xticks(positions, labels, rotation=90)
        ax.set_xlabel(groupby)
        ax.set_ylabel(column)
        if threshold is not None:
            frac = _fraction_below(array, threshold)
            ax.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}: {frac:.1%} below")
    if threshold is not None or groups is None:
        ax.legend(loc="best", fontsize="small", frameon=False)
    title = column if threshold is None else f"{column} ({_fraction_below(array, threshold):.1%} below {threshold:g})"
    ax.set_title(title)
    return finish(fig, ax, writekey="confidence", show=show, save=save, return_fig=return_fig, owns_figure=owns)
