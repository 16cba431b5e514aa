import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse


def make_counts(n_obs: int = 40, n_vars: int = 25, seed: int = 0) -> np.ndarray:
    """Small random count matrix with one all-zero cell (row 1)."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(3.0, size=(n_obs, n_vars)) * (rng.random((n_obs, n_vars)) < 0.4)
    x[0, :3] = [50, 1, 7]
    x[1] = 0
    return x.astype(np.float32)


@pytest.fixture
def counts_dense() -> np.ndarray:
    return make_counts()


@pytest.fixture
def counts_adata(counts_dense) -> ad.AnnData:
    x = counts_dense
    var = pd.DataFrame(index=[f"GENE{i}" for i in range(x.shape[1])])
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(x.shape[0])])
    return ad.AnnData(sparse.csr_matrix(x), obs=obs, var=var)


@pytest.fixture
def pbmc_log() -> ad.AnnData:
    """pbmc68k_reduced with its log-normalised `raw` as X (765 gene symbols)."""
    return sc.datasets.pbmc68k_reduced().raw.to_adata()


@pytest.fixture
def pbmc_scaled() -> ad.AnnData:
    """pbmc68k_reduced as shipped: X is sc.pp.scale output."""
    return sc.datasets.pbmc68k_reduced()
