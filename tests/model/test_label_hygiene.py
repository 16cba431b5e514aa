"""`setup_anndata` refuses label columns holding the strings `.astype(str)` makes of missing values."""

import numpy as np
import pandas as pd
import pytest

import scmulan


@pytest.mark.parametrize("missing", [np.nan, None, pd.NA])
@pytest.mark.parametrize("categorical", [True, False])
def test_stringified_missing_labels_are_refused_with_the_fix(atlas, missing, categorical):
    values = atlas.obs["cell_type"].astype(object).to_numpy()
    values[:7] = missing
    strings = pd.Series(values, index=atlas.obs_names).astype(str)  # NaN -> "nan", None -> "None", NA -> "<NA>"
    atlas.obs["cell_type"] = strings.astype("category") if categorical else strings
    shown = repr(str(missing))
    with pytest.raises(
        ValueError, match=rf"obs\['cell_type'\]` holds the label\(s\) {shown} in 7 cells.*astype\(str\)"
    ):
        scmulan.SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    assert "_scvi_uuid" not in atlas.uns  # nothing registered

    # the fix the message names makes them missing labels, which are allowed
    atlas.obs["cell_type"] = atlas.obs["cell_type"].astype("string").replace([str(missing)], pd.NA)
    scmulan.SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    codes = atlas.obs["_scvi_scmulan_cell_type"].to_numpy()
    assert (codes[:7] == -1).all()
    assert (codes[7:] >= 0).all()


def test_empty_and_spaced_strings_are_refused_real_labels_pass(atlas):
    atlas.obs["organ"] = atlas.obs["organ"].astype(object)
    atlas.obs.iloc[0, atlas.obs.columns.get_loc("organ")] = " "
    atlas.obs.iloc[1, atlas.obs.columns.get_loc("organ")] = "NaN"
    with pytest.raises(ValueError, match=r"holds the label\(s\) ' ', 'NaN' in 2 cells"):
        scmulan.SCMULAN.setup_anndata(atlas, organ_key="organ")
    atlas.obs["organ"] = [f"{v} nan-free" for v in range(atlas.n_obs)]  # a label merely containing 'nan' is fine
    atlas.obs["organ"] = atlas.obs["organ"].str.replace("nan-free", "Nancy")
    scmulan.SCMULAN.setup_anndata(atlas, organ_key="organ")
