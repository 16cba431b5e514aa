"""Fixtures for the ``pl`` tests: a small pbmc68k_reduced subset with fake scmulan outputs, and generated cells."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

N_CELLS = 240


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(autouse=True)
def _figdir(tmp_path):
    """Keep ``save=True`` writes in the test's folder and never show."""
    figdir, autoshow = sc.settings.figdir, sc.settings.autoshow
    sc.settings.figdir, sc.settings.autoshow = tmp_path / "figures", False
    yield
    sc.settings.figdir, sc.settings.autoshow = figdir, autoshow


@pytest.fixture(scope="session")
def _pbmc() -> ad.AnnData:
    adata = sc.datasets.pbmc68k_reduced()[:N_CELLS].copy()
    adata.X = adata.raw.X.copy()  # log-normalised, CSR, like real input
    rng = np.random.default_rng(0)
    truth = adata.obs["bulk_labels"].astype(str).to_numpy()
    pred = truth.copy()
    flip = rng.random(adata.n_obs) < 0.25
    pred[flip] = rng.choice(np.unique(truth), size=int(flip.sum()))
    pred[:3] = "Platelet"  # a label that is only predicted
    adata.obs["scmulan_fine"] = pd.Categorical(pred)
    adata.obs["scmulan_coarse"] = pd.Categorical(np.where(np.char.startswith(pred.astype(str), "CD"), "CD", "other"))
    confidence = rng.random(adata.n_obs)
    confidence[5:10] = np.nan
    adata.obs["scmulan_confidence"] = confidence
    adata.obs["scmulan_organ"] = pd.Categorical(rng.choice(["Blood", "Marrow"], adata.n_obs))
    adata.obs["scmulan_organ_confidence"] = rng.random(adata.n_obs)
    adata.obsm["X_scmulan"] = (adata.obsm["X_pca"][:, :20] + rng.normal(0, 0.1, (adata.n_obs, 20))).astype(np.float32)
    return adata


@pytest.fixture
def pbmc(_pbmc) -> ad.AnnData:
    """A fresh copy per test: 240 cells (log-normalised CSR `X`) with `scmulan_*` columns, `X_scmulan`, and the user's own UMAP."""
    return _pbmc.copy()


@pytest.fixture
def generated(_pbmc) -> ad.AnnData:
    """'Generated' cells: real cells plus noise as CSR, on the real genes minus 40 plus 5 unknown ones."""
    rng = np.random.default_rng(1)
    source = _pbmc[rng.choice(_pbmc.n_obs, 120, replace=False), 40:]
    x = np.clip(source.X.toarray() + rng.normal(0, 0.3, source.shape), 0, None).astype(np.float32)
    extra = rng.random((source.n_obs, 5)).astype(np.float32)
    x = sparse.csr_matrix(np.hstack([x, extra]))
    var = pd.DataFrame(index=[*source.var_names, *[f"NEWGENE{i}" for i in range(5)]])
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(source.obs["bulk_labels"].astype(str)),
            "n_genes": rng.integers(100, 500, source.n_obs),
            "ended": True,
        },
        index=[f"gen{i}" for i in range(source.n_obs)],
    )
    out = ad.AnnData(X=x, obs=obs, var=var)
    out.layers["levels"] = sparse.csr_matrix(np.round(x.toarray() * 10))
    return out
