import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mudata import MuData

import scmulan

ADDED_OBSM = "X_umap_scmulan"
ADDED_UNS = ["scmulan_neighbors", "X_umap_scmulan"]
ADDED_OBSP = ["scmulan_neighbors_distances", "scmulan_neighbors_connectivities"]


def _with_fake_umap(adata):
    """Skip the (slow) UMAP where the test is about drawing: a precomputed basis is reused."""
    adata.obsm[ADDED_OBSM] = adata.obsm["X_umap"].copy()
    return adata


def test_umap_adds_documented_keys_and_keeps_users_umap(pbmc):
    user_umap = pbmc.obsm["X_umap"].copy()
    user_neighbors = dict(pbmc.uns["neighbors"])
    user_connectivities = pbmc.obsp["connectivities"].copy()

    ax = scmulan.pl.umap(pbmc, color="scmulan_fine", show=False)

    assert isinstance(ax, Axes)
    assert ADDED_OBSM in pbmc.obsm
    assert pbmc.obsm[ADDED_OBSM].shape == (pbmc.n_obs, 2)
    assert all(key in pbmc.uns for key in ADDED_UNS)
    assert all(key in pbmc.obsp for key in ADDED_OBSP)
    assert pbmc.uns["scmulan_neighbors"]["params"]["use_rep"] == "X_scmulan"
    np.testing.assert_array_equal(pbmc.obsm["X_umap"], user_umap)
    assert pbmc.uns["neighbors"].keys() == user_neighbors.keys()
    assert pbmc.uns["neighbors"]["params"] == user_neighbors["params"]
    assert (pbmc.obsp["connectivities"] != user_connectivities).nnz == 0

    # a second call reuses the stored UMAP; recompute=True computes it again
    pbmc.obsm[ADDED_OBSM] = np.zeros((pbmc.n_obs, 2))
    scmulan.pl.umap(pbmc, color="scmulan_fine", show=False)
    assert not pbmc.obsm[ADDED_OBSM].any()
    scmulan.pl.umap(pbmc, color="scmulan_fine", recompute=True, n_neighbors=10, show=False)
    assert pbmc.obsm[ADDED_OBSM].any()
    assert pbmc.uns["scmulan_neighbors"]["params"]["n_neighbors"] == 10

    # another embedding or another neighbour count computes it again without being asked
    pbmc.obsm[ADDED_OBSM] = np.zeros((pbmc.n_obs, 2))
    scmulan.pl.umap(pbmc, color="scmulan_fine", n_neighbors=12, show=False)
    assert pbmc.obsm[ADDED_OBSM].any()
    assert pbmc.uns["scmulan_neighbors"]["params"]["n_neighbors"] == 12
    pbmc.obsm["X_other"] = pbmc.obsm["X_scmulan"][:, :5].copy()
    scmulan.pl.umap(pbmc, color="scmulan_fine", use_rep="X_other", n_neighbors=12, show=False)
    assert pbmc.uns["scmulan_neighbors"]["params"]["use_rep"] == "X_other"


def test_umap_returns_list_figure_and_saves(pbmc, tmp_path):
    _with_fake_umap(pbmc)
    axes = scmulan.pl.umap(pbmc, color=["scmulan_fine", "scmulan_confidence"], show=False)
    assert isinstance(axes, list)
    assert len(axes) == 2
    assert all(isinstance(ax, Axes) for ax in axes)

    fig = scmulan.pl.umap(pbmc, color="scmulan_coarse", return_fig=True, show=False)
    assert isinstance(fig, Figure)

    path = tmp_path / "umap.png"
    ax = scmulan.pl.umap(pbmc, color="scmulan_fine", save=str(path), show=False)
    assert isinstance(ax, Axes)
    assert path.stat().st_size > 0


def test_umap_into_given_ax(pbmc):
    import matplotlib.pyplot as plt

    _with_fake_umap(pbmc)
    _, ax = plt.subplots()
    assert scmulan.pl.umap(pbmc, color="scmulan_fine", ax=ax, show=False) is ax


def test_umap_missing_embedding_raises(pbmc):
    del pbmc.obsm["X_scmulan"]
    with pytest.raises(ValueError, match=r"obsm\['X_scmulan'\].*scmulan\.tl\.embed"):
        scmulan.pl.umap(pbmc, color="scmulan_fine", show=False)


def test_umap_mudata(pbmc):
    _with_fake_umap(pbmc)
    mdata = MuData({"rna": pbmc})
    ax = scmulan.pl.umap(mdata, color="scmulan_fine", show=False)
    assert isinstance(ax, Axes)
    with pytest.raises(ValueError, match="modality"):
        scmulan.pl.umap(mdata, color="scmulan_fine", mod="atac", show=False)
