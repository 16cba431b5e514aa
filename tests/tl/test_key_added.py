"""``key_added`` means one thing in every ``tl`` function (the name of the result) and ``uns[key]["params"]``."""

from __future__ import annotations

import numpy as np
import pytest

import scmulan


def test_embed_and_annotate_name_the_same_embedding_the_same_way(atlas_model, atlas_query):
    annotated = scmulan.tl.annotate(atlas_query, atlas_model, key_added="cells", copy=True, progress=False)
    embedded = scmulan.tl.embed(atlas_query, atlas_model, key_added="cells", copy=True, progress=False)
    assert "X_cells" in annotated.obsm
    assert list(embedded.obsm) == ["X_cells"]
    np.testing.assert_allclose(embedded.obsm["X_cells"], annotated.obsm["X_cells"], atol=1e-6)
    assert "cells_fine" in annotated.obs
    for result in (annotated, embedded):
        assert set(result.uns) - set(atlas_query.uns) == {"cells"}


def test_every_tl_function_records_its_params_like_sc_tl_umap(atlas_model, atlas_query):
    scmulan.tl.annotate(atlas_query, atlas_model, key_added="ann", batch_size=16, progress=False)
    scmulan.tl.embed(atlas_query, atlas_model, pooling="mean", key_added="emb", progress=False)
    scmulan.tl.predict_metadata(atlas_query, atlas_model, "organ", key_added="meta", progress=False)
    scmulan.tl.smooth_labels(atlas_query, "ann_fine", n_neighbors=5, use_rep="X_emb", key_added="smooth")
    assert atlas_query.uns["ann"]["params"]["batch_size"] == 16
    assert atlas_query.uns["emb"]["params"] == {"pooling": "mean", "legacy": False, "batch_size": 64}
    assert atlas_query.uns["meta"]["params"] == {
        "fields": ["organ"],
        "use_metadata": True,
        "batch_size": 64,
        "quantize": False,
    }
    assert atlas_query.uns["smooth"]["params"]["use_rep"] == "X_emb"
    assert "smooth" in atlas_query.obs
    assert "smooth_score" in atlas_query.obs


def test_the_latest_call_owns_params_and_earlier_ones_keep_theirs(atlas_model, atlas_query):
    scmulan.tl.annotate(atlas_query, atlas_model, exclude_unclassified=True, progress=False)
    scmulan.tl.embed(atlas_query, atlas_model, pooling="mean", progress=False)
    record = atlas_query.uns["scmulan"]
    assert record["params"] == record["embed"]["params"]
    assert record["params"]["pooling"] == "mean"
    assert record["annotate"]["params"]["exclude_unclassified"] is True


def test_the_old_obsm_spelling_of_embed_warns_and_writes_where_it_did(atlas_model, atlas_query):
    with pytest.warns(FutureWarning, match=r"pass key_added='mean'") as caught:
        scmulan.tl.embed(atlas_query, atlas_model, pooling="mean", key_added="X_mean", progress=False)
    assert caught[0].filename == __file__  # the warning points at the user's line, not at scmulan
    assert "X_mean" in atlas_query.obsm
    assert "X_X_mean" not in atlas_query.obsm
    assert atlas_query.uns["mean"]["params"]["pooling"] == "mean"
    expected = scmulan.tl.embed(atlas_query, atlas_model, pooling="mean", key_added="mean", copy=True, progress=False)
    np.testing.assert_array_equal(atlas_query.obsm["X_mean"], expected.obsm["X_mean"])


def test_the_new_spelling_does_not_warn(atlas_model, atlas_query, recwarn):
    scmulan.tl.embed(atlas_query, atlas_model, pooling="mean", key_added="mean", progress=False)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
    assert "X_mean" in atlas_query.obsm
