import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

from scmulan.datasets import pbmc68k
from scmulan.datasets._pbmc68k import counts_from_lognorm


@pytest.fixture(scope="module")
def reduced():
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture(scope="module")
def adata():
    return pbmc68k()


def test_shape_and_format(adata, reduced):
    assert adata.shape == (700, 765)
    assert sparse.issparse(adata.X)
    assert adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    assert list(adata.var_names) == list(reduced.raw.var_names)
    assert list(adata.obs_names) == list(reduced.obs_names)
    # Nothing derived from the scaled matrix is kept.
    assert len(adata.obsm) == 0
    assert len(adata.varm) == 0
    assert len(adata.obsp) == 0


def test_counts_are_nonnegative_integers(adata):
    data = adata.X.data
    assert (data > 0).all()  # explicit zeros are removed, nothing negative
    np.testing.assert_array_equal(data, np.round(data))
    # Every cell still expresses some genes and the matrix is sparse like real data.
    assert np.diff(adata.X.indptr).min() > 0
    assert 0.1 < adata.X.nnz / np.prod(adata.shape) < 0.6


def test_counts_reproduce_lognormalised_raw(adata, reduced):
    # The oracle: Scanpy's own log-normalisation of the recovered counts, with the original library sizes.
    n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)[:, None]
    relognorm = np.log1p(adata.X.toarray() / n_counts * 1e4)
    np.testing.assert_allclose(relognorm, reduced.raw.X.toarray(), atol=2e-3)
    assert adata.uns["dataset"]["max_rounding_deviation"] < 0.25


def test_cell_type_labels(adata, reduced):
    obs = adata.obs
    for key in ("cell_type", "coarse_cell_type", "organ", "region", "technology"):
        assert isinstance(obs[key].dtype, pd.CategoricalDtype), key
        assert obs[key].notna().all(), key
    np.testing.assert_array_equal(obs["cell_type"].astype(str), reduced.obs["bulk_labels"].astype(str))
    assert set(obs["coarse_cell_type"].cat.categories) == {
        "T cell",
        "B cell",
        "NK cell",
        "Monocyte",
        "Dendritic cell",
        "HSPC",
    }
    # Every bulk label has exactly one coarse type, and it is the one its name says.
    pairs = obs.groupby("cell_type", observed=True)["coarse_cell_type"].unique()
    assert len(pairs) == obs["cell_type"].nunique() == 10
    expected = {"CD34+": "HSPC", "CD56+ NK": "NK cell", "CD19+ B": "B cell", "CD14+ Monocyte": "Monocyte"}
    expected["Dendritic"] = "Dendritic cell"
    for fine, coarse in pairs.items():
        assert len(coarse) == 1, fine
        want = "T cell" if fine.startswith(("CD4+", "CD8+")) else expected[fine]
        assert coarse[0] == want, fine


def test_constant_metadata(adata):
    for key, value in {"organ": "Blood", "region": "Peripheral blood", "technology": "10X"}.items():
        assert adata.obs[key].cat.categories.tolist() == [value]
        assert (adata.obs[key] == value).all()
    assert "source" in adata.uns["dataset"]


def test_writes_h5ad(adata, tmp_path):
    path = tmp_path / "pbmc68k.h5ad"
    adata.write_h5ad(path)
    assert sc.read_h5ad(path).shape == adata.shape


def test_counts_from_lognorm_inverts_lognormalisation():
    rng = np.random.default_rng(0)
    counts = sparse.random(
        50, 40, density=0.3, format="csr", random_state=rng, data_rvs=lambda n: rng.integers(1, 200, n)
    )
    library = np.asarray(counts.sum(1)).ravel() + rng.integers(0, 500, 50)  # library over more genes than shown
    lognorm = counts.multiply(1e4 / library[:, None]).tocsr()
    lognorm.data = np.log1p(lognorm.data).astype(np.float32)
    recovered, deviation = counts_from_lognorm(lognorm, library)
    np.testing.assert_array_equal(recovered.toarray(), counts.toarray())
    assert deviation < 0.05


@pytest.mark.parametrize("factor", [1.5, 0.8])
def test_counts_from_lognorm_rejects_wrong_library_sizes(reduced, factor):
    with pytest.raises(ValueError, match="not log1p"):
        counts_from_lognorm(reduced.raw.X, reduced.obs["n_counts"].to_numpy() * factor)
