"""UMAP of the scmulan cell embedding, computed under its own keys and drawn with :func:`scanpy.pl.embedding`."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

from anndata import AnnData

from scmulan._anndata import get_modality
from scmulan._logging import logger

from ._utils import DOC_SHOW_SAVE_AX, doc_params, finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData


def _compute_umap(adata: AnnData, *, use_rep: str, n_neighbors: int, key_added: str) -> None:
    """Neighbours and UMAP of ``obsm[use_rep]`` under the scmulan keys; the user's own keys are not touched."""
    import scanpy as sc

    neighbors_key = f"{key_added}_neighbors"
    basis = f"X_umap_{key_added}"
    logger.info("computing UMAP of `obsm[%r]` (%d neighbours)", use_rep, n_neighbors)
    sc.pp.neighbors(adata, use_rep=use_rep, n_neighbors=n_neighbors, key_added=neighbors_key)
    sc.tl.umap(adata, neighbors_key=neighbors_key, key_added=basis)
    logger.info(
        "    finished: added uns[%r], obsp[%r], obsp[%r], obsm[%r], uns[%r]",
        neighbors_key,
        f"{neighbors_key}_distances",
        f"{neighbors_key}_connectivities",
        basis,
        basis,
    )


def _stale(adata: AnnData, *, use_rep: str, n_neighbors: int, key: str) -> bool:
    """Whether the stored UMAP was computed from another embedding or another number of neighbours.

    A basis without a recorded neighbour graph (set by the user) is taken as it is.
    """
    params = adata.uns.get(f"{key}_neighbors", {}).get("params", {})
    stored = (params.get("use_rep"), params.get("n_neighbors"))
    if not params or stored == (use_rep, n_neighbors):
        return False
    logger.info("the stored UMAP used %s; recomputing for use_rep=%r, n_neighbors=%d", stored, use_rep, n_neighbors)
    return True


@doc_params(doc_show_save_ax=DOC_SHOW_SAVE_AX)
def umap(
    adata: AnnData | MuData,
    color: str | Sequence[str] | None = None,
    *,
    use_rep: str = "X_scmulan",
    n_neighbors: int = 15,
    key_added: str = "scmulan",
    recompute: bool = False,
    mod: str = "rna",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | PathLike | None = None,
    return_fig: bool = False,
    **kwargs: Any,
) -> Figure | Axes | list[Axes] | None:
    """UMAP of the scmulan cell embedding, coloured by annotations or genes.

    The UMAP is computed on first use from the embedding written by :func:`scmulan.tl.embed` or
    :func:`scmulan.tl.annotate` (``obsm["X_scmulan"]``) and stored under its own keys, so a UMAP or
    neighbour graph the user already has (``obsm["X_umap"]``, ``uns["neighbors"]``) is never overwritten.
    Later calls with the same ``use_rep`` and ``n_neighbors`` reuse it (other values, or ``recompute=True``,
    compute it again). Drawing is done by :func:`scanpy.pl.embedding`.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality ``mod`` holds the embedding.
    color
        Keys of ``obs`` or ``var_names`` to colour by, e.g. ``"scmulan_fine"`` or
        ``["scmulan_fine", "scmulan_confidence"]``.
    use_rep
        Key of ``obsm`` holding the cell embedding.
    n_neighbors
        Number of neighbours of the graph the UMAP is computed from.
    key_added
        Prefix of the keys written (see below).
    recompute
        Compute neighbours and UMAP again even if ``obsm[f"X_umap_{key_added}"]`` exists for the same ``use_rep``
        and ``n_neighbors`` (e.g. after :func:`scmulan.tl.embed` wrote a new embedding under the same key).
    mod
        MuData modality; ignored for AnnData input.
    {doc_show_save_ax}
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``legend_loc``, ``palette``, ``size``, ``title``, …).

    Returns
    -------
    `None` if the plot was shown; the :class:`~matplotlib.figure.Figure` if `return_fig=True`; otherwise the
    :class:`~matplotlib.axes.Axes`, or a list of them when ``color`` names several keys.

    When the UMAP is computed, these keys are added to ``adata`` (to ``mdata.mod[mod]`` for MuData):

    `adata.uns[f"{key_added}_neighbors"]` : :class:`dict`
        Neighbour graph parameters (:func:`scanpy.pp.neighbors` on ``use_rep``).
    `adata.obsp[f"{key_added}_neighbors_distances"]`, `adata.obsp[f"{key_added}_neighbors_connectivities"]` : :class:`scipy.sparse.csr_matrix`
        The neighbour graph.
    `adata.obsm[f"X_umap_{key_added}"]` : :class:`numpy.ndarray`
        UMAP coordinates (default ``obsm["X_umap_scmulan"]``).
    `adata.uns[f"X_umap_{key_added}"]` : :class:`dict`
        UMAP parameters.

    As with any Scanpy plot, colouring by a categorical ``obs`` column stores its palette in
    ``adata.uns[f"{color}_colors"]`` if it is not there yet.

    Examples
    --------
    >>> import scmulan
    >>> scmulan.tl.annotate(adata, model)  # doctest: +SKIP
    >>> scmulan.pl.umap(adata, color=["scmulan_fine", "scmulan_confidence"])  # doctest: +SKIP
    """
    import scanpy as sc

    adata = get_modality(adata, mod)
    basis = f"X_umap_{key_added}"
    if recompute or basis not in adata.obsm or _stale(adata, use_rep=use_rep, n_neighbors=n_neighbors, key=key_added):
        if use_rep not in adata.obsm:
            available = ", ".join(repr(k) for k in adata.obsm) or "none"
            msg = (
                f"`adata.obsm[{use_rep!r}]` not found (obsm keys: {available}). "
                "Run scmulan.tl.embed(adata, model) or scmulan.tl.annotate(adata, model) first, "
                "or pass another embedding as `use_rep=`."
            )
            raise ValueError(msg)
        _compute_umap(adata, use_rep=use_rep, n_neighbors=n_neighbors, key_added=key_added)

    axes = sc.pl.embedding(adata, basis=basis, color=color, ax=ax, show=False, save=False, **kwargs)
    axes_list = axes if isinstance(axes, list) else [axes]
    for panel in axes_list:  # Scanpy names the axes after the obsm key ("X_umap_scmulan1")
        if panel.get_xlabel() == f"{basis}1":
            panel.set_xlabel("UMAP1")
            panel.set_ylabel("UMAP2")
    first = axes_list[0]
    return finish(
        first.figure, axes, writekey="umap", show=show, save=save, return_fig=return_fig, owns_figure=ax is None
    )
