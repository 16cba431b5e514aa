"""Heatmap of the confusion matrix between reference and predicted labels."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING

import numpy as np

from scmulan._anndata import get_modality

from ._confusion_matrix import _paired_labels, confusion_matrix
from ._utils import DOC_RETURNS, DOC_SHOW_SAVE_AX, doc_params, finish, new_axes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from mudata import MuData


@doc_params(doc_show_save_ax=DOC_SHOW_SAVE_AX, doc_returns=DOC_RETURNS)
def confusion(
    adata: AnnData | MuData,
    true_key: str,
    pred_key: str = "scmulan_fine",
    *,
    normalize: bool = True,
    order: Sequence[str] | None = None,
    cmap: str | Colormap = "Blues",
    annotate: bool = True,
    mod: str = "rna",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Heatmap of the confusion matrix of reference against predicted labels.

    Rows are the reference labels (``true_key``), columns the predicted ones (``pred_key``), both over the
    union of the labels present; the matrix itself is :func:`scmulan.pl.confusion_matrix`. The title gives
    the accuracy and the macro-averaged F1 score (:func:`sklearn.metrics.f1_score`, over the labels present) of
    the cells that have both labels. Rows of labels that are only predicted are left blank when normalised.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality ``mod`` holds both columns.
    true_key
        Column of ``obs`` with the reference labels.
    pred_key
        Column of ``obs`` with the predictions, e.g. ``"scmulan_fine"`` or ``"scmulan_coarse"``.
    normalize
        Show the fraction of each reference label predicted as each label (rows sum to 1) instead of counts.
    order
        Labels to put first, in this order; the others follow.
    cmap
        Matplotlib colour map.
    annotate
        Write the value in each non-zero cell of the heatmap.
    mod
        MuData modality; ignored for AnnData input.
    {doc_show_save_ax}

    Returns
    -------
    {doc_returns}

    Examples
    --------
    >>> scmulan.pl.confusion(adata, "cell_type", "scmulan_fine", order=["T cell", "B cell"])  # doctest: +SKIP
    """
    from sklearn.metrics import accuracy_score, f1_score

    adata = get_modality(adata, mod)
    matrix = confusion_matrix(adata, true_key, pred_key, normalize=normalize, order=order)
    y_true, y_pred, labels = _paired_labels(adata, true_key, pred_key, order)
    accuracy = accuracy_score(y_true, y_pred)
    macro_f1 = f1_score(y_true, y_pred, average="macro", zero_division=0)

    n = len(labels)
    size = max(4.0, 0.35 * n + 2.5)
    fig, ax, owns = new_axes(ax, figsize=(size + 1, size))
    values = matrix.to_numpy(dtype=float)
    vmax = 1.0 if normalize else max(float(np.nanmax(values)), 1.0)
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, aspect="equal", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of reference cells" if normalize else "cells")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels, rotation=90)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel(f"predicted ({pred_key})")
    ax.set_ylabel(f"reference ({true_key})")
    if annotate:
        fontsize = max(4.0, min(9.0, 120.0 / max(n, 1)))
        for i, j in zip(*np.nonzero(np.nan_to_num(values) > 0), strict=True):
            value = values[i, j]
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            colour = "white" if value > 0.5 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    ax.set_title(f"accuracy {accuracy:.3f}, macro-F1 {macro_f1:.3f} ({len(y_true)} cells)")
    return finish(fig, ax, writekey="confusion", show=show, save=save, return_fig=return_fig, owns_figure=owns)
