"""Result keys that already exist: the user's own are replaced with a warning, scmulan's own with a log note."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import scmulan


def test_annotate_warns_before_replacing_the_users_columns(atlas_model, atlas_query):
    atlas_query.obs["scmulan_fine"] = "my label"
    atlas_query.obs["scmulan_confidence"] = 0.5
    with pytest.warns(
        UserWarning,
        match=r"replaces obs\['scmulan_fine'\], obs\['scmulan_confidence'\], which scmulan "
        r"did not write.*another `key_added=`",
    ) as record:
        scmulan.tl.annotate(atlas_query, atlas_model, progress=False)
    (warning,) = [w for w in record if "did not write" in str(w.message)]
    assert warning.filename == __file__  # points at the user's call
    assert "my label" not in set(atlas_query.obs["scmulan_fine"].astype(str))


def test_rerun_replaces_its_own_results_with_a_log_note(atlas_model, atlas_query, caplog):
    scmulan.tl.annotate(atlas_query, atlas_model, progress=False)
    first = atlas_query.obs["scmulan_fine"].copy()
    logger = logging.getLogger("scmulan")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="scmulan"), warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*which scmulan did not write")
            scmulan.tl.annotate(atlas_query, atlas_model, progress=False)
            scmulan.tl.embed(atlas_query, atlas_model, progress=False)  # obsm['X_scmulan'] is annotate's: scmulan's own
    finally:
        logger.removeHandler(caplog.handler)
    assert "replacing obs['scmulan_coarse']" in caplog.text
    assert "replacing obsm['X_scmulan']" in caplog.text
    assert (atlas_query.obs["scmulan_fine"] == first).all()  # deterministic decoding: same labels


def test_another_key_added_keeps_the_users_columns(atlas_model, atlas_query):
    atlas_query.obs["scmulan_fine"] = "my label"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*which scmulan did not write")
        scmulan.tl.annotate(atlas_query, atlas_model, key_added="run2", progress=False)
    assert (atlas_query.obs["scmulan_fine"] == "my label").all()
    assert "run2_fine" in atlas_query.obs


def test_embed_predict_metadata_and_smooth_labels_warn_too(atlas_model, atlas_query):
    atlas_query.obsm["X_scmulan"] = np.zeros((atlas_query.n_obs, 2))
    with pytest.warns(UserWarning, match=r"`scmulan\.tl\.embed` replaces obsm\['X_scmulan'\]"):
        scmulan.tl.embed(atlas_query, atlas_model, progress=False)
    atlas_query.obs["scmulan_organ"] = "mine"
    with pytest.warns(UserWarning, match=r"`scmulan\.tl\.predict_metadata` replaces obs\['scmulan_organ'\]"):
        scmulan.tl.predict_metadata(atlas_query, atlas_model, fields=["organ"], progress=False)
    atlas_query.obs["labels"] = ["a", "b"] * (atlas_query.n_obs // 2)
    atlas_query.obs["labels_smoothed_score"] = 1.0
    with pytest.warns(UserWarning, match=r"smooth_labels` replaces obs\['labels_smoothed_score'\]"):
        scmulan.tl.smooth_labels(atlas_query, "labels", n_neighbors=5)
