"""Compare generated cells with real ones: per-gene means and a joint UMAP on the real cells' PCA."""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from scmulan._anndata import get_modality
from scmulan._logging import logger
from scmulan._two_sample import c2st_auroc, real_pca

from ._utils import DOC_SHOW_SAVE, doc_params, finish

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

SOURCE_COLORS = {"real": "#1f77b4", "generated": "#ff7f0e"}


def _shared_genes(real: AnnData, generated: AnnData) -> pd.Index:
    for name, adata in (("real", real), ("generated", generated)):
        if not adata.var_names.is_unique:
            msg = f"`{name}.var_names` are not unique; run `{name}.var_names_make_unique()` first."
            raise ValueError(msg)
        if adata.n_obs == 0:
            msg = f"`{name}` has no cells."
            raise ValueError(msg)
    genes = real.var_names.intersection(generated.var_names, sort=False)
    if genes.empty:
        msg = (
            "`real` and `generated` share no genes (var_names). Both need gene symbols as var_names; "
            "scmulan.tl.generate returns the model's genes."
        )
        raise ValueError(msg)
    return genes


def _matrix(adata: AnnData, genes: pd.Index, layer: str | None, name: str) -> np.ndarray | sparse.csr_matrix:
    if layer is not None and layer not in adata.layers:
        available = ", ".join(repr(k) for k in adata.layers) or "none"
        msg = f"`{name}.layers[{layer!r}]` not found (layers: {available}); pass `layer=None` to use `.X`."
        raise ValueError(msg)
    matrix = adata.X if layer is None else adata.layers[layer]
    matrix = matrix[:, adata.var_names.get_indexer(genes)]
    return sparse.csr_matrix(matrix, dtype=np.float64) if sparse.issparse(matrix) else np.asarray(matrix, np.float64)


def _mean(matrix: np.ndarray | sparse.csr_matrix) -> np.ndarray:
    return np.asarray(matrix.mean(axis=0), dtype=np.float64).ravel()


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _groups(adata: AnnData, groupby: str, name: str) -> pd.Series:
    if groupby not in adata.obs:
        msg = (
            f"`{name}.obs[{groupby!r}]` not found; `groupby` must name a column of both `real.obs` and "
            "`generated.obs` (scmulan.tl.generate writes its conditions, e.g. 'cell_type', to obs)."
        )
        raise ValueError(msg)
    column = adata.obs[groupby]
    return column.astype(str).where(column.notna(), "NA")


def _joint_umap(real_x, generated_x, n_pcs: int) -> tuple[np.ndarray, np.ndarray, float]:
    """UMAP of real and generated cells in the real cells' PCA space, and the C2ST AUROC in that space."""
    import scanpy as sc

    pcs = real_pca(real_x, generated_x, n_pcs)
    n_cells = pcs.shape[0]
    joint = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n_cells)]))
    joint.obsm["X_pca"] = pcs.astype(np.float32)
    sc.pp.neighbors(joint, use_rep="X_pca", n_neighbors=min(15, n_cells - 1), random_state=0)
    sc.tl.umap(joint, random_state=0)
    coords = np.asarray(joint.obsm["X_umap"])
    n_real = real_x.shape[0]
    return coords[:n_real], coords[n_real:], c2st_auroc(pcs[:n_real], pcs[n_real:])


def _palette(labels: list[str]) -> dict[str, str]:
    from scanpy.plotting import palettes

    colors = palettes.default_20 if len(labels) <= 20 else palettes.default_102
    palette = {label: colors[i % len(colors)] for i, label in enumerate(labels)}
    if "NA" in palette:
        palette["NA"] = "lightgray"
    return palette


def _check_axes(ax: Sequence[Axes] | np.ndarray | None, n_panels: int) -> list[Axes] | None:
    """The user's Axes, one per panel, or `None` to make a new figure."""
    if ax is None:
        return None
    from matplotlib.axes import Axes

    axes = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
    if not all(isinstance(a, Axes) for a in axes):
        msg = f"`ax` must be a sequence (or array) of matplotlib Axes, one per panel; got {type(ax).__name__}."
        raise TypeError(msg)
    if len(axes) != n_panels:
        panels = "per-gene means, UMAP by source" + (", UMAP by group" if n_panels == 3 else "")
        msg = (
            f"`ax` must hold {n_panels} Axes, one per panel ({panels}), got {len(axes)}; "
            f"e.g. `fig, ax = plt.subplots(1, {n_panels})`."
        )
        raise ValueError(msg)
    return axes


def _legend_outside(ax: Axes, **kwargs) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize="small", markerscale=2, **kwargs)


@doc_params(doc_show_save=DOC_SHOW_SAVE)
def generated_vs_real(
    real: AnnData | MuData,
    generated: AnnData | MuData,
    *,
    groupby: str | None = None,
    layer: str | None = None,
    n_pcs: int = 30,
    mod: str = "rna",
    ax: Sequence[Axes] | np.ndarray | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Compare cells generated by :func:`scmulan.tl.generate` with real cells.

    Over the genes both objects share (``var_names``), the figure shows:

    1. the mean expression of each gene in the real against the generated cells, with the Pearson
       correlation in the title (and, with ``groupby``, one colour and one correlation per group present
       in both objects);
    2. a joint UMAP of all cells, coloured by source (real or generated): the PCA is fitted on the real
       cells only and applied to both, then neighbours and UMAP are computed on a new object; the title gives
       the classifier two-sample test AUROC (a logistic regression separating real from generated cells in that
       PCA, 5-fold; 0.5: indistinguishable, 1: fully separable);
    3. with ``groupby``, the same UMAP coloured by group.

    Neither input is modified. Both should hold log-normalised values in the same scale (``X`` of
    :func:`scmulan.tl.generate` is log-normalised).

    Parameters
    ----------
    real
        Real cells: AnnData, or MuData whose modality ``mod`` is used.
    generated
        Generated cells, e.g. the AnnData returned by :func:`scmulan.tl.generate`.
    groupby
        Column of both ``obs`` to split and colour by, e.g. ``"cell_type"`` (a condition of the generation).
    layer
        Layer of both objects to use instead of ``X``.
    n_pcs
        Number of principal components of the joint UMAP (fewer when there are few cells or genes).
    mod
        MuData modality, for either input; ignored for AnnData input.
    ax
        Axes to draw into, one per panel in the order above: 2 without ``groupby``, 3 with it (e.g. the
        array of ``plt.subplots(1, 3)``). A new figure is made when `None`; a figure passed this way is
        left open after saving.
    {doc_show_save}

    Returns
    -------
    `None` if the plot was shown; the :class:`~matplotlib.figure.Figure` if `return_fig=True`; otherwise the
    list of Axes (means, UMAP by source and, with ``groupby``, UMAP by group).

    Examples
    --------
    >>> generated = scmulan.tl.generate(model, {"cell_type": ["T cell"] * 200})  # doctest: +SKIP
    >>> scmulan.pl.generated_vs_real(adata, generated, groupby="cell_type")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    n_panels = 2 if groupby is None else 3
    user_axes = _check_axes(ax, n_panels)
    real = get_modality(real, mod)
    generated = get_modality(generated, mod)
    genes = _shared_genes(real, generated)
    real_x = _matrix(real, genes, layer, "real")
    generated_x = _matrix(generated, genes, layer, "generated")
    real_groups = generated_groups = None
    if groupby is not None:
        real_groups = _groups(real, groupby, "real")
        generated_groups = _groups(generated, groupby, "generated")

    logger.info("comparing %d real and %d generated cells over %d genes", real.n_obs, generated.n_obs, len(genes))
    real_mean, generated_mean = _mean(real_x), _mean(generated_x)
    r_all = _pearson(real_mean, generated_mean)
    real_umap, generated_umap, auroc = _joint_umap(real_x, generated_x, n_pcs)

    if user_axes is None:
        fig, axes = plt.subplots(1, n_panels, figsize=(5.0 * n_panels + 1.5, 4.5), layout="constrained")
        axes = list(axes)
    else:
        fig, axes = user_axes[0].figure, user_axes

    ax = axes[0]
    if groupby is None:
        ax.scatter(real_mean, generated_mean, s=6, alpha=0.6, color="tab:blue", linewidths=0)
    else:
        labels = [g for g in pd.unique(real_groups) if g != "NA" and g in set(generated_groups)]
        palette = _palette(labels)
        for label in labels:
            x = _mean(real_x[(real_groups == label).to_numpy()])
            y = _mean(generated_x[(generated_groups == label).to_numpy()])
            ax.scatter(
                x, y, s=6, alpha=0.6, color=palette[label], linewidths=0, label=f"{label} (r={_pearson(x, y):.2f})"
            )
        if labels:
            _legend_outside(ax, title=groupby)
    top = float(max(np.max(real_mean), np.max(generated_mean), 0.0))
    ax.plot([0, top], [0, top], color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("mean expression, real")
    ax.set_ylabel("mean expression, generated")
    ax.set_title(f"per-gene mean ({len(genes)} genes), Pearson r = {r_all:.3f}")

    size = float(np.clip(12000 / (real.n_obs + generated.n_obs), 1, 20))
    ax = axes[1]
    for source, coords in (("real", real_umap), ("generated", generated_umap)):
        ax.scatter(*coords.T, s=size, color=SOURCE_COLORS[source], alpha=0.7, linewidths=0, label=source)
    _legend_outside(ax)
    ax.set_title(f"joint UMAP (PCA of real cells); C2ST AUROC = {auroc:.2f}")

    if groupby is not None:
        ax = axes[2]
        all_labels = list(dict.fromkeys([*pd.unique(real_groups), *pd.unique(generated_groups)]))
        palette = _palette(all_labels)
        coords = np.vstack([real_umap, generated_umap])
        groups = np.concatenate([real_groups.to_numpy(), generated_groups.to_numpy()])
        for label in all_labels:
            mask = groups == label
            ax.scatter(*coords[mask].T, s=size, color=palette[label], alpha=0.7, linewidths=0, label=label)
        _legend_outside(ax, title=groupby)
        ax.set_title(f"joint UMAP by {groupby}")
    for ax in axes[1:]:
        ax.set_xlabel("UMAP1")
        ax.set_ylabel("UMAP2")
        ax.set_xticks([])
        ax.set_yticks([])

    return finish(
        fig,
        axes,
        writekey="generated_vs_real",
        show=show,
        save=save,
        return_fig=return_fig,
        owns_figure=user_axes is None,
    )
