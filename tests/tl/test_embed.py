"""``scmulan.tl.embed``: both poolings, keys, copy semantics, MuData."""

from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData
from mudata import MuData
from scipy import sparse

import scmulan


@pytest.mark.parametrize("pooling", ["annotation", "mean"])
def test_embed_writes_the_model_embedding(atlas_model, atlas_query, pooling):
    X = atlas_query.X.copy()
    assert scmulan.tl.embed(atlas_query, atlas_model, pooling=pooling, progress=False) is None
    embedding = atlas_query.obsm["X_scmulan"]
    assert embedding.dtype == np.float32
    assert embedding.shape == (atlas_query.n_obs, atlas_model.config.n_embd)
    expected = atlas_model.get_latent_representation(atlas_query, pooling=pooling, progress=False)
    np.testing.assert_allclose(embedding, expected, atol=1e-6)
    assert atlas_query.uns["scmulan"]["params"] == {"pooling": pooling, "legacy": False, "batch_size": 64}
    assert atlas_query.uns["scmulan"]["embed"]["params"] == atlas_query.uns["scmulan"]["params"]
    assert (atlas_query.X != X).nnz == 0


def test_the_two_poolings_differ_and_annotation_pooling_matches_annotate(atlas_model, atlas_query):
    scmulan.tl.embed(atlas_query, atlas_model, pooling="mean", key_added="mean", progress=False)
    scmulan.tl.embed(atlas_query, atlas_model, pooling="annotation", progress=False)
    assert set(atlas_query.uns) >= {"mean", "scmulan"}
    assert not np.allclose(atlas_query.obsm["X_mean"], atlas_query.obsm["X_scmulan"])
    annotated = scmulan.tl.annotate(atlas_query, atlas_model, key_added="ann", copy=True, progress=False)
    np.testing.assert_allclose(annotated.obsm["X_ann"], atlas_query.obsm["X_scmulan"], atol=1e-6)


def test_copy(atlas_model, atlas_query):
    out = scmulan.tl.embed(atlas_query, atlas_model, copy=True, progress=False)
    assert isinstance(out, AnnData)
    assert "X_scmulan" in out.obsm
    assert "X_scmulan" not in atlas_query.obsm
    assert "scmulan" not in atlas_query.uns


@pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")
def test_mudata(atlas_model, atlas_query):
    mdata = MuData({"rna": atlas_query})
    scmulan.tl.embed(mdata, atlas_model, pooling="mean", progress=False)
    assert mdata.mod["rna"].obsm["X_scmulan"].shape == (atlas_query.n_obs, atlas_model.config.n_embd)


def test_unknown_pooling_is_refused(atlas_model, atlas_query):
    with pytest.raises(ValueError, match="`pooling` must be 'annotation' or 'mean'"):
        scmulan.tl.embed(atlas_query, atlas_model, pooling="cls", progress=False)


def test_cells_without_model_genes_get_nan_mean_embeddings(atlas_model, atlas_query):
    cells = atlas_query[:10].copy()
    X = cells.X.tolil()
    X[3] = 0
    cells.X = sparse.csr_matrix(X)
    with pytest.warns(UserWarning, match="^1 cells express none of the model's genes; their mean-pooled embeddings"):
        scmulan.tl.embed(cells, atlas_model, pooling="mean", progress=False)
    assert np.isnan(cells.obsm["X_scmulan"][3]).all()
    assert np.isfinite(np.delete(cells.obsm["X_scmulan"], 3, axis=0)).all()
