"""``scmulan.tl.annotate``: end to end, the keys it writes, copy semantics, MuData, model paths and bad input."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from mudata import MuData
from scipy import sparse

import scmulan

# MuData's own notice about its future .update() behaviour, raised when a MuData is built
MUDATA_UPDATE = pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")


def _snapshot(adata: AnnData) -> dict:
    return {
        "obs": adata.obs.copy(),
        "obsm": set(adata.obsm),
        "uns": set(adata.uns),
        "X": adata.X.copy(),
    }


def _assert_unchanged(adata: AnnData, snapshot: dict) -> None:
    pd.testing.assert_frame_equal(adata.obs, snapshot["obs"])
    assert set(adata.obsm) == snapshot["obsm"]
    assert set(adata.uns) == snapshot["uns"]
    assert (adata.X != snapshot["X"]).nnz == 0


def _assert_annotated(adata: AnnData, model, key: str = "scmulan") -> None:
    coarse, fine = adata.obs[f"{key}_coarse"], adata.obs[f"{key}_fine"]
    assert isinstance(coarse.dtype, pd.CategoricalDtype)
    assert isinstance(fine.dtype, pd.CategoricalDtype)
    assert set(coarse.cat.categories) <= set(model.vocab.categories("coarse_cell_type"))
    assert set(fine.cat.categories) <= set(model.vocab.categories("cell_type"))
    assert coarse.notna().all()
    assert fine.notna().all()
    confidence = adata.obs[f"{key}_confidence"]
    assert np.issubdtype(confidence.dtype, np.floating)
    assert confidence.between(0, 1).all()
    embedding = adata.obsm[f"X_{key}"]
    assert embedding.dtype == np.float32
    assert embedding.shape == (adata.n_obs, model.config.n_embd)
    assert np.isfinite(embedding).all()


@pytest.mark.parametrize("dataset", ["pbmc", "atlas"])
def test_end_to_end_annotation(dataset, request):
    model = request.getfixturevalue(f"{dataset}_model")
    query = request.getfixturevalue(f"{dataset}_query")
    X = query.X.copy()
    assert "_scvi_uuid" not in query.uns
    assert scmulan.tl.annotate(query, model, batch_size=32, progress=False) is None
    _assert_annotated(query, model)
    assert query.uns["scmulan"]["annotate"]["params"] == {
        "constrained": True,
        "legacy": False,
        "exclude_unclassified": False,
        "restrict_to_cell_types": False,
        "use_metadata": True,
        "batch_size": 32,
        "open_set": False,
        "calibrated": True,
        "quantize": False,
        "prior_correction": 0.0,
        "marginal": False,
    }
    # the same answers as the model method; the input expression is untouched and the query never registered
    labels, embedding = model.annotate(query, batch_size=32, return_embedding=True, progress=False)
    assert list(query.obs["scmulan_fine"].astype(str)) == list(labels["fine"].astype(str))
    np.testing.assert_allclose(query.obs["scmulan_confidence"], labels["confidence"], atol=1e-6)
    np.testing.assert_allclose(query.obsm["X_scmulan"], embedding, atol=1e-6)
    assert (query.X != X).nnz == 0
    assert "_scvi_uuid" not in query.uns


def test_unconstrained_options_reach_the_model(atlas_model, atlas_query):
    # restrict_to_cell_types is passed on (and recorded); without the constraint, labels stay within each field
    scmulan.tl.annotate(atlas_query, atlas_model, constrained=False, restrict_to_cell_types=True, progress=False)
    params = atlas_query.uns["scmulan"]["annotate"]["params"]
    assert params["constrained"] is False
    assert params["restrict_to_cell_types"] is True
    labels = atlas_model.annotate(atlas_query, constrained=False, restrict_to_cell_types=True, progress=False)
    assert list(atlas_query.obs["scmulan_fine"].astype(str)) == list(labels["fine"].astype(str))
    free = atlas_model.annotate(atlas_query, constrained=False, progress=False)
    for frame in (labels, free):
        assert set(frame["coarse"].astype(str)) <= {*atlas_model.vocab.categories("coarse_cell_type"), "Unclassified"}
        assert set(frame["fine"].astype(str)) <= {*atlas_model.vocab.categories("cell_type"), "Unclassified"}


def test_key_added(atlas_model, atlas_query):
    scmulan.tl.annotate(atlas_query, atlas_model, key_added="pred", progress=False)
    _assert_annotated(atlas_query, atlas_model, key="pred")
    assert "annotate" in atlas_query.uns["pred"]
    assert not [k for k in atlas_query.obs if k.startswith("scmulan")]
    assert "X_scmulan" not in atlas_query.obsm
    assert "scmulan" not in atlas_query.uns


def test_copy_returns_a_new_object_and_leaves_the_input_alone(atlas_model, atlas_query):
    before = _snapshot(atlas_query)
    out = scmulan.tl.annotate(atlas_query, atlas_model, copy=True, progress=False)
    assert isinstance(out, AnnData)
    assert out is not atlas_query
    _assert_unchanged(atlas_query, before)
    _assert_annotated(out, atlas_model)
    assert (out.X != before["X"]).nnz == 0


def _mudata(rna: AnnData) -> MuData:
    other = AnnData(np.ones((rna.n_obs, 3), dtype=np.float32), obs=pd.DataFrame(index=rna.obs_names))
    return MuData({"rna": rna, "prot": other})


@MUDATA_UPDATE
def test_mudata_results_go_into_the_rna_modality(atlas_model, atlas_query):
    mdata = _mudata(atlas_query)
    assert scmulan.tl.annotate(mdata, atlas_model, progress=False) is None
    _assert_annotated(mdata.mod["rna"], atlas_model)
    assert "scmulan_coarse" not in mdata.mod["prot"].obs


@MUDATA_UPDATE
def test_mudata_copy(atlas_model, atlas_query):
    mdata = _mudata(atlas_query)
    before = _snapshot(mdata.mod["rna"])
    out = scmulan.tl.annotate(mdata, atlas_model, copy=True, progress=False)
    assert isinstance(out, MuData)
    _assert_annotated(out.mod["rna"], atlas_model)
    _assert_unchanged(mdata.mod["rna"], before)


@MUDATA_UPDATE
def test_a_missing_modality_is_named(atlas_model, atlas_query):
    with pytest.raises(ValueError, match="mod='rna'"):
        scmulan.tl.annotate(MuData({"gex": atlas_query}), atlas_model, progress=False)


def test_model_given_as_a_saved_directory(atlas_model, atlas_model_dir, atlas_query):
    expected = atlas_model.annotate(atlas_query, progress=False)
    for model in (str(atlas_model_dir), atlas_model_dir):
        cells = atlas_query.copy()
        scmulan.tl.annotate(cells, model, progress=False)
        assert list(cells.obs["scmulan_fine"].astype(str)) == list(expected["fine"].astype(str))
        np.testing.assert_allclose(cells.obs["scmulan_confidence"], expected["confidence"], atol=1e-6)


def test_a_path_that_is_no_model_is_refused(atlas_query, tmp_path):
    with pytest.raises(ValueError, match="is not a saved scmulan model"):
        scmulan.tl.annotate(atlas_query, tmp_path, progress=False)
    with pytest.raises(ValueError, match="neither a saved model directory nor a pretrained name"):
        scmulan.tl.annotate(atlas_query, str(tmp_path / "nowhere"), progress=False)


def test_a_query_built_from_scratch_needs_no_registration(pbmc_model, pbmc_query):
    bare = AnnData(pbmc_query.X.copy(), var=pd.DataFrame(index=pbmc_query.var_names.copy()))
    scmulan.tl.annotate(bare, pbmc_model, progress=False)
    _assert_annotated(bare, pbmc_model)


def test_no_shared_gene_asks_for_prepare(atlas_model, atlas_query):
    atlas_query.var_names = [f"OTHER{i}" for i in range(atlas_query.n_vars)]
    atlas_query.var = atlas_query.var.drop(columns=["scmulan_gene", "scmulan_gene_status"], errors="ignore")
    with pytest.raises(ValueError, match=re.escape("scmulan.pp.prepare")) as info:
        scmulan.tl.annotate(atlas_query, atlas_model, progress=False)
    assert "shares no gene" in str(info.value)


def test_no_shared_gene_is_an_error(atlas_model, atlas_query):
    atlas_query.var_names = [f"OTHER{i}" for i in range(atlas_query.n_vars)]
    atlas_query.var = atlas_query.var.drop(columns=["scmulan_gene", "scmulan_gene_status"], errors="ignore")
    with pytest.raises(ValueError, match="shares no gene with the model"):
        scmulan.tl.annotate(atlas_query, atlas_model, progress=False)


@pytest.mark.parametrize(
    "function", [scmulan.tl.annotate, scmulan.tl.embed, scmulan.tl.predict_metadata], ids=lambda f: f.__name__
)
def test_low_gene_overlap_warns_with_the_counts_and_the_fix(atlas_model, atlas_query, function):
    n_model = len(atlas_model.vocab.genes)
    few = atlas_query[:, atlas_query.var_names[:20]].copy()  # 20 of the model's 100 genes
    assert n_model == 100
    expected = re.escape("The data have only 20 of the model's 100 genes (20.0%, below 50%)")
    expected += ".*" + re.escape("`scmulan.pp.prepare(adata, model)`")
    with pytest.warns(UserWarning, match=expected) as record:
        function(few, atlas_model, progress=False)
    (warning,) = [w for w in record if "of the model's 100 genes" in str(w.message)]
    assert warning.filename == __file__  # it points at the caller's line, not into scmulan
    # half of the genes or more: no warning
    half = atlas_query[:, atlas_query.var_names[:50]].copy()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*of the model's .* genes")
        function(half, atlas_model, progress=False)


def test_an_empty_anndata_is_refused(atlas_model, atlas_query):
    with pytest.raises(ValueError, match="no cells"):
        scmulan.tl.annotate(atlas_query[:0].copy(), atlas_model, progress=False)


def test_raw_counts_ask_for_prepare(atlas_model, atlas_query):
    atlas_query.X = atlas_query.layers["counts"].copy()
    with pytest.raises(ValueError, match=re.escape("scmulan.pp.prepare")) as info:
        scmulan.tl.annotate(atlas_query, atlas_model, progress=False)
    assert "raw counts" in str(info.value)
    assert not [k for k in atlas_query.obs if k.startswith("scmulan")]


def test_cells_without_model_genes_are_left_unlabelled(pbmc_model, pbmc_query):
    cells = pbmc_query[:20].copy()
    X = cells.X.tolil()
    X[[0, 7]] = 0
    cells.X = sparse.csr_matrix(X)
    with pytest.warns(UserWarning, match="^2 cells express none of the model's genes"):
        scmulan.tl.annotate(cells, pbmc_model, progress=False)
    empty = np.isin(np.arange(20), [0, 7])
    for key in ("scmulan_coarse", "scmulan_fine", "scmulan_confidence"):
        assert cells.obs[key].isna().to_numpy().tolist() == empty.tolist(), key
    assert np.isfinite(cells.obsm["X_scmulan"][~empty]).all()


def test_a_tampered_checkpoint_is_refused_clearly(atlas_model_dir, atlas_query, tmp_path):
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(atlas_model_dir, broken)
    vocab = json.loads((broken / "vocab.json").read_text())
    vocab["tokens"].append(["cell_type", "Extra"])
    (broken / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match=r"vocab.json is not the vocabulary saved with"):
        scmulan.tl.annotate(atlas_query, broken, progress=False)


def test_int8_decoding_is_one_keyword_away(atlas_model, atlas_query):
    # tl.annotate and tl.predict_metadata reach the model's int8 CPU path and record it
    scmulan.tl.annotate(atlas_query, atlas_model, quantize=True, device="cpu", progress=False)
    assert atlas_query.uns["scmulan"]["annotate"]["params"]["quantize"] is True
    int8 = atlas_model.annotate(atlas_query, quantize=True, device="cpu", progress=False)
    assert list(atlas_query.obs["scmulan_fine"].astype(str)) == list(int8["fine"].astype(str))
    fp32 = atlas_model.annotate(atlas_query, device="cpu", progress=False)
    assert (int8["fine"].astype(str) == fp32["fine"].astype(str)).mean() >= 0.95
    scmulan.tl.predict_metadata(atlas_query, atlas_model, ["organ"], quantize=True, device="cpu", progress=False)
    assert atlas_query.uns["scmulan"]["predict_metadata"]["params"]["quantize"] is True
    organ = atlas_model.predict_metadata(atlas_query, ["organ"], quantize=True, device="cpu", progress=False)
    assert list(atlas_query.obs["scmulan_organ"].astype(str)) == list(organ["organ"].astype(str))
