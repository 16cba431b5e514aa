"""kNN smoothing of predicted labels (the original scMulan's ``cell_type_smoothing``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from scmulan.tl._utils import finish, note_overwrite, record, start, target

if TYPE_CHECKING:
    from mudata import MuData


def smooth_labels(
    adata: AnnData | MuData,
    key: str = "scmulan_fine",
    *,
    n_neighbors: int = 15,
    use_rep: str = "X_scmulan",
    weighted: bool = True,
    threshold: float = 0.5,
    unassigned: str = "Unclassified",
    key_added: str | None = None,
    mod: str = "rna",
    copy: bool = False,
) -> AnnData | MuData | None:
    """Replace each cell's label by the vote of its nearest neighbours.

    Every cell takes the majority label of its ``n_neighbors`` nearest neighbours in ``use_rep`` (itself excluded),
    votes weighted by inverse distance when ``weighted``. The score is the winning label's share of the votes; a
    cell whose score is below ``threshold`` gets ``unassigned``.

    Parameters
    ----------
    adata
        Cells with labels in ``obs[key]`` and a representation in ``obsm[use_rep]``; AnnData or MuData.
    key
        ``obs`` column of labels to smooth (e.g. written by :func:`scmulan.tl.annotate`).
    n_neighbors
        Neighbours that vote.
    use_rep
        ``obsm`` representation for the neighbour search.
    weighted
        Weight votes by ``1 / distance``.
    threshold
        Minimum vote share (0..1); the original also accepted an integer vote count, pass ``count / n_neighbors``.
    unassigned
        Label of cells below the threshold.
    key_added
        Name of the result, as in every ``scmulan.tl`` function: the column ``obs[key_added]`` (default
        ``f"{key}_smoothed"``), its vote share ``obs[f"{key_added}_score"]`` and the parameters
        ``uns[key_added]["params"]``.
    mod, copy
        As in :func:`scmulan.tl.annotate`.

    Returns
    -------
    ``None``, or the copy if ``copy=True``. Sets ``adata.obs[key_added]`` (categorical),
    ``adata.obs[f"{key_added}_score"]`` (vote share; NaN for cells whose ``use_rep`` row is not finite, which get
    ``unassigned`` and do not vote) and ``adata.uns[key_added]['params']`` (also kept in
    ``uns[key_added]['smooth_labels']['params']``).
    """
    data, ad = target(adata, mod=mod, copy=copy)
    if key not in ad.obs:
        msg = f"`obs[{key!r}]` is missing; run `scmulan.tl.annotate(adata, model)` first or pass `key=`."
        raise ValueError(msg)
    if use_rep not in ad.obsm:
        msg = f"`obsm[{use_rep!r}]` is missing; run `scmulan.tl.embed(adata, model)` first or pass `use_rep=`."
        raise ValueError(msg)
    if not 0 <= threshold <= 1:
        msg = f"`threshold` is a vote share in [0, 1], got {threshold}."
        raise ValueError(msg)
    if not 1 <= n_neighbors < ad.n_obs:
        msg = f"`n_neighbors` must be between 1 and n_obs - 1 ({ad.n_obs - 1}), got {n_neighbors}."
        raise ValueError(msg)
    key_added = key_added or f"{key}_smoothed"
    labels = pd.Categorical(ad.obs[key])
    if (labels.codes < 0).all():
        msg = f"`obs[{key!r}]` holds no labels (all missing); there is nothing to smooth."
        raise ValueError(msg)
    X = np.asarray(ad.obsm[use_rep], dtype=np.float32)
    # cells without an embedding (NaN rows: no model gene was expressed) neither vote nor get a vote
    rows = np.flatnonzero(np.isfinite(X).all(1))
    if len(rows) <= n_neighbors:
        msg = (
            f"Only {len(rows)} cells have a finite `obsm[{use_rep!r}]` row; `n_neighbors` ({n_neighbors}) must be "
            "smaller than that."
        )
        raise ValueError(msg)
    started = start(f"smoothing {key!r} over {n_neighbors} neighbours")
    share, winner, total = _vote(X[rows], labels.codes[rows], labels.categories, n_neighbors, weighted)
    score = np.full(ad.n_obs, np.nan)
    score[rows] = share
    smoothed = np.full(ad.n_obs, unassigned, dtype=object)
    smoothed[rows] = np.where((share >= threshold) & (total > 0), winner, unassigned)
    note_overwrite(ad, key_added, "smooth_labels", obs=[key_added, f"{key_added}_score"])
    ad.obs[key_added] = pd.Categorical(smoothed)
    ad.obs[f"{key_added}_score"] = score.astype(np.float32)
    record(
        ad,
        key_added,
        "smooth_labels",
        {"key": key, "n_neighbors": n_neighbors, "use_rep": use_rep, "weighted": weighted, "threshold": threshold},
    )
    finish(started, [f"obs['{key_added}']", f"obs['{key_added}_score']"])
    return data if copy else None


def _vote(
    X: np.ndarray, codes: np.ndarray, categories: pd.Index, n_neighbors: int, weighted: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vote share, winning label and total vote weight of every row of ``X`` among its nearest neighbours."""
    from sklearn.neighbors import NearestNeighbors

    n = len(X)
    dist, idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(X).kneighbors(X)
    # drop each cell itself (the first hit, or wherever it appears among ties at distance 0)
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), n_neighbors)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    idx = idx[keep].reshape(n, n_neighbors)
    dist = dist[keep].reshape(n, n_neighbors)
    weight = 1.0 / np.maximum(dist, 1e-12) if weighted else np.ones_like(dist)
    neighbour_codes = codes[idx]  # (n, k); -1 = neighbour without a label
    weight = np.where(neighbour_codes >= 0, weight, 0.0)
    votes = np.zeros((n, len(categories) + 1))
    np.add.at(votes, (np.repeat(np.arange(n), n_neighbors), neighbour_codes.ravel()), weight.ravel())
    votes = votes[:, :-1]  # the -1 column collected unlabelled neighbours with weight 0
    total = votes.sum(1)
    score = np.divide(votes.max(1), total, out=np.zeros_like(total), where=total > 0)
    names = np.asarray(categories, dtype=object)[votes.argmax(1)]
    return score, names, total
