"""The result of :func:`scmulan.tl.perturb`: top responding genes and the shift in predicted cell type."""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from ._utils import DOC_SHOW_SAVE, doc_params, finish

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

KEY = "scmulan_perturb"


@doc_params(doc_show_save=DOC_SHOW_SAVE)
def perturbation(
    adata: AnnData,
    *,
    n_genes: int = 20,
    groupby: str = "predicted_cell_type",
    ax: Sequence[Axes] | np.ndarray | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Plot an in-silico perturbation made by :func:`scmulan.tl.perturb`.

    1. The ``n_genes`` genes with the largest Welch's t statistic (in absolute value), with their log2 fold change
       (perturbed vs control), the genes set by the perturbation left out;
    2. when ``obs[groupby]`` exists (``tl.perturb`` writes ``predicted_cell_type`` for models that learnt
       annotation), the fraction of control and perturbed cells in each group.

    Parameters
    ----------
    adata
        The AnnData returned by :func:`scmulan.tl.perturb`.
    n_genes
        Number of responding genes shown.
    groupby
        Column of ``obs`` whose composition is compared between control and perturbed cells.
    ax
        Axes to draw into, one per panel (1, or 2 with ``obs[groupby]``); a new figure when `None`.
    {doc_show_save}

    Returns
    -------
    `None` if the plot was shown; the :class:`~matplotlib.figure.Figure` if `return_fig=True`; otherwise the list
    of Axes.

    Examples
    --------
    >>> out = scmulan.tl.perturb(model, {"cell_type": "HSC"}, genes={"GATA1": 10})  # doctest: +SKIP
    >>> scmulan.pl.perturbation(out)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if KEY not in adata.uns or "effects" not in adata.uns[KEY] or "perturbation" not in adata.obs:
        msg = "`adata` holds no perturbation result; make it with `scmulan.tl.perturb(model, conditions, genes=...)`."
        raise ValueError(msg)
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        msg = f"`n_genes` must be an integer >= 1, got {n_genes!r}."
        raise ValueError(msg)
    effects = adata.uns[KEY]["effects"]
    has_groups = groupby in adata.obs
    n_panels = 2 if has_groups else 1
    if ax is None:
        fig, axes = plt.subplots(1, n_panels, figsize=(5.0 * n_panels + 1.0, 0.25 * n_genes + 1.5), squeeze=False)
        axes, owns = list(axes.ravel()), True
    else:
        from matplotlib.axes import Axes

        axes = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != n_panels or not all(isinstance(a, Axes) for a in axes):
            msg = f"`ax` must hold {n_panels} matplotlib Axes (genes{', ' + groupby if has_groups else ''})."
            raise ValueError(msg)
        fig, owns = axes[0].figure, False

    top = effects[~effects["perturbed"].astype(bool)].head(n_genes).iloc[::-1]
    held = ", ".join(f"{g} = {lv}" for g, lv in adata.uns[KEY]["genes"].items())
    colors = np.where(top["log2_fold_change"] > 0, "tab:red", "tab:blue")
    axes[0].barh(top.index.astype(str), top["log2_fold_change"], color=colors)
    axes[0].axvline(0, color="gray", linewidth=0.8)
    axes[0].set_xlabel("log2 fold change, perturbed vs control")
    axes[0].set_title(f"top {len(top)} responding genes ({held})", fontsize="medium")
    if has_groups:
        table = pd.crosstab(adata.obs[groupby].astype(str), adata.obs["perturbation"], normalize="columns")
        table = table.sort_values(table.columns[-1], ascending=True)
        y = np.arange(len(table))
        height = 0.4
        for k, (arm, color) in enumerate(zip(table.columns, ("tab:gray", "tab:orange"), strict=False)):
            axes[1].barh(y + (k - 0.5) * height, table[arm], height=height, color=color, label=str(arm))
        axes[1].set_yticks(y, table.index)
        axes[1].set_xlabel("fraction of cells")
        axes[1].set_title(f"{groupby}: control vs perturbed", fontsize="medium")
        axes[1].legend(frameon=False, fontsize="small")
    if owns:
        fig.set_layout_engine("constrained")
    return finish(fig, axes, writekey="perturbation", show=show, save=save, return_fig=return_fig, owns_figure=owns)
