"""``scmulan.tl.predict_metadata``: keys, dtypes, fields the model cannot predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scmulan


def test_organ_prediction(atlas_model, atlas_query):
    X = atlas_query.X.copy()
    assert scmulan.tl.predict_metadata(atlas_query, atlas_model, ["organ"], progress=False) is None
    organ = atlas_query.obs["scmulan_organ"]
    assert isinstance(organ.dtype, pd.CategoricalDtype)
    assert organ.notna().all()
    assert set(organ.cat.categories) <= set(atlas_model.vocab.categories("organ"))
    confidence = atlas_query.obs["scmulan_organ_confidence"]
    assert np.issubdtype(confidence.dtype, np.floating)
    assert confidence.between(0, 1).all()
    assert "scmulan_region" not in atlas_query.obs
    assert atlas_query.uns["scmulan"]["predict_metadata"]["params"]["fields"] == ["organ"]
    expected = atlas_model.predict_metadata(atlas_query, ["organ"], progress=False)
    assert list(organ.astype(str)) == list(expected["organ"].astype(str))
    assert (atlas_query.X != X).nnz == 0


def test_two_fields_and_key_added(atlas_model, atlas_query):
    scmulan.tl.predict_metadata(atlas_query, atlas_model, ("organ", "region"), key_added="meta", progress=False)
    for field in ("organ", "region"):
        assert f"meta_{field}" in atlas_query.obs
        assert f"meta_{field}_confidence" in atlas_query.obs
        assert set(atlas_query.obs[f"meta_{field}"].cat.categories) <= set(atlas_model.vocab.categories(field))
    assert "predict_metadata" in atlas_query.uns["meta"]


def test_annotation_and_metadata_records_live_side_by_side(atlas_model, atlas_query):
    scmulan.tl.annotate(atlas_query, atlas_model, progress=False)
    scmulan.tl.predict_metadata(atlas_query, atlas_model, "organ", progress=False)
    assert set(atlas_query.uns["scmulan"]) == {"params", "annotate", "predict_metadata"}
    assert atlas_query.uns["scmulan"]["params"] == atlas_query.uns["scmulan"]["predict_metadata"]["params"]


@pytest.mark.parametrize("field", ["sex", "cell_type", "planet"])
def test_a_field_the_model_cannot_predict_is_refused(atlas_model, atlas_query, field):
    with pytest.raises(ValueError, match=f"cannot predict \\['{field}'\\]") as info:
        scmulan.tl.predict_metadata(atlas_query, atlas_model, [field], progress=False)
    assert "organ" in str(info.value)  # names what it can predict
    assert not [k for k in atlas_query.obs if k.startswith("scmulan")]


def test_copy(atlas_model, atlas_query):
    out = scmulan.tl.predict_metadata(atlas_query, atlas_model, ["organ"], copy=True, progress=False)
    assert "scmulan_organ" in out.obs
    assert "scmulan_organ" not in atlas_query.obs


@pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")
def test_mudata_predictions_go_into_the_rna_modality(atlas_model, atlas_query):
    from anndata import AnnData
    from mudata import MuData

    other = AnnData(np.ones((atlas_query.n_obs, 3), dtype=np.float32), obs=pd.DataFrame(index=atlas_query.obs_names))
    mdata = MuData({"rna": atlas_query, "prot": other})
    assert scmulan.tl.predict_metadata(mdata, atlas_model, ["organ"], progress=False) is None
    expected = atlas_model.predict_metadata(atlas_query, ["organ"], progress=False)
    assert list(mdata.mod["rna"].obs["scmulan_organ"].astype(str)) == list(expected["organ"].astype(str))
    assert "scmulan_organ" not in mdata.mod["prot"].obs
