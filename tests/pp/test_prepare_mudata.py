"""`scmulan.pp.prepare` on MuData: results land in the modality; `get_modality` errors."""

import anndata as ad
import mudata as md
import numpy as np
import pytest
from scipy import sparse

from scmulan._anndata import get_modality
from scmulan.pp import prepare

pytestmark = pytest.mark.filterwarnings("ignore:From 0.4 .update\\(\\) will not pull:FutureWarning")


@pytest.fixture
def mdata(counts_adata) -> md.MuData:
    rng = np.random.default_rng(0)
    prot = ad.AnnData(sparse.csr_matrix(rng.poisson(5.0, size=(counts_adata.n_obs, 4)).astype(np.float32)))
    prot.obs_names = counts_adata.obs_names
    prot.var_names = [f"PROT{i}" for i in range(4)]
    return md.MuData({"rna": counts_adata, "prot": prot})


def test_results_written_into_modality(mdata, counts_dense):
    prot_x = mdata.mod["prot"].X
    assert prepare(mdata, genes=list(mdata.mod["rna"].var_names)) is None
    rna = mdata.mod["rna"]
    assert "scmulan_gene" in rna.var
    assert "scmulan_prepare" in rna.uns
    assert "counts" in rna.layers
    assert rna.uns["scmulan_prepare"]["params"]["mod"] == "rna"
    assert rna.X.format == "csr"
    assert not np.allclose(rna.X.toarray(), counts_dense)  # normalised
    assert mdata.mod["prot"].X is prot_x  # other modalities untouched
    assert "scmulan_prepare" not in mdata.mod["prot"].uns


def test_copy_returns_mudata_and_leaves_input(mdata, counts_dense):
    out = prepare(mdata, copy=True)
    assert isinstance(out, md.MuData)
    assert "scmulan_gene" in out.mod["rna"].var
    assert "scmulan_gene" not in mdata.mod["rna"].var
    np.testing.assert_array_equal(mdata.mod["rna"].X.toarray(), counts_dense)


def test_other_modality(mdata):
    prepare(mdata, mod="prot")
    assert mdata.mod["prot"].uns["scmulan_prepare"]["data_kind"] == "counts"
    assert "scmulan_prepare" not in mdata.mod["rna"].uns


def test_missing_modality_lists_available(mdata):
    with pytest.raises(ValueError, match=r"no modality `mod='gex'`; available modalities: 'rna', 'prot'"):
        prepare(mdata, mod="gex")


def test_get_modality(mdata, counts_adata):
    assert get_modality(counts_adata) is counts_adata
    assert get_modality(counts_adata, mod="ignored") is counts_adata
    assert get_modality(mdata) is mdata.mod["rna"]
    with pytest.raises(TypeError, match="Expected an AnnData or MuData"):
        get_modality(np.zeros((2, 2)))
