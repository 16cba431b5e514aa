"""Reliability diagram: does a confidence of 0.8 mean that 80 % of those labels are right?"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from scmulan._anndata import get_modality

from ._utils import DOC_RETURNS, DOC_SHOW_SAVE_AX, doc_params, finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData


@doc_params(doc_show_save_ax=DOC_SHOW_SAVE_AX, doc_returns=DOC_RETURNS)
def reliability(
    adata: AnnData | MuData,
    truth_key: str,
    key: str = "scmulan",
    *,
    level: str = "fine",
    n_bins: int = 10,
    mod: str = "rna",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Confidence against correctness: accuracy per confidence bin, with the expected calibration error.

    Cells are binned by ``obs[f"{key}_confidence"]`` (for ``level="coarse"``, the coarse confidence is not stored in
    ``obs``: pass a ``key`` whose confidence belongs to the labels compared); each bar is the fraction of its cells
    whose label ``obs[f"{key}_{level}"]`` equals ``obs[truth_key]``. A calibrated model's bars follow the diagonal.
    Cells called ``"Unknown"`` (open set) or with a missing label are left out.

    Parameters
    ----------
    adata
        Annotated cells (:func:`scmulan.tl.annotate`) with known labels in ``obs[truth_key]``.
    truth_key
        Column of ``obs`` with the true labels at the same level as the predictions.
    key
        ``key_added`` of the annotation.
    level
        ``"fine"`` or ``"coarse"``: which predicted column is compared with the truth.
    n_bins
        Equal-width confidence bins over ``[0, 1]``.
    mod
        MuData modality; ignored for AnnData input.
    {doc_show_save_ax}

    Returns
    -------
    {doc_returns}

    Examples
    --------
    >>> scmulan.tl.annotate(test, model)  # doctest: +SKIP
    >>> scmulan.pl.reliability(test, truth_key="cell_type")  # doctest: +SKIP
    """
    from scmulan.model import expected_calibration_error, reliability_bins

    adata = get_modality(adata, mod)
    if level not in ("fine", "coarse"):
        msg = f"`level` must be 'fine' or 'coarse', got {level!r}."
        raise ValueError(msg)
    columns = {"prediction": f"{key}_{level}", "confidence": f"{key}_confidence", "truth": truth_key}
    missing = [c for c in columns.values() if c not in adata.obs]
    if missing:
        msg = (
            f"`adata.obs` lacks {missing}: run scmulan.tl.annotate(adata, model, key_added={key!r}) first and pass the "
            "column with the true labels as `truth_key`."
        )
        raise ValueError(msg)
    pred = adata.obs[columns["prediction"]].astype(object).to_numpy()
    truth = adata.obs[truth_key].astype(object).to_numpy()
    conf = adata.obs[columns["confidence"]].to_numpy(dtype=np.float64)
    keep = (pred != None) & (pred != "Unknown") & (truth != None) & np.isfinite(conf)  # noqa: E711
    keep &= ~adata.obs[truth_key].isna().to_numpy()
    correct = (pred[keep].astype(str) == truth[keep].astype(str)).astype(float)
    counts, mean_conf, accuracy = reliability_bins(conf[keep], correct, n_bins)
    ece = expected_calibration_error(conf[keep], correct, n_bins)
    fig, ax, owns = new_axes(ax, figsize=(4.5, 4.5))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    filled = counts > 0
    ax.bar(
        edges[:-1][filled],
        accuracy[filled],
        width=1.0 / n_bins,
        align="edge",
        color="tab:blue",
        alpha=0.7,
        edgecolor="white",
        label="accuracy per bin",
    )
    ax.plot(mean_conf[filled], accuracy[filled], "o", color="tab:blue", markersize=3)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(columns["confidence"])
    ax.set_ylabel(f"fraction of {level} labels right")
    ax.set_title(f"{int(keep.sum())} cells, ECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize="small", frameon=False)
    return finish(fig, ax, writekey="reliability", show=show, save=save, return_fig=return_fig, owns_figure=owns)
