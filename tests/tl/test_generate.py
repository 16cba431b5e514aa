"""``scmulan.tl.generate``: a new AnnData with the conditions in ``obs``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scmulan


def test_generate_returns_cells_with_their_conditions(atlas_model):
    organ, cell_type = atlas_model.vocab.categories("organ")[0], atlas_model.vocab.categories("cell_type")[0]
    out = scmulan.tl.generate(atlas_model, {"organ": organ, "cell_type": cell_type}, n_cells=4, seed=1, progress=False)
    assert out.n_obs == 4
    assert list(out.var_names) == atlas_model.vocab.genes
    assert (out.obs["organ"] == organ).all()
    assert (out.obs["cell_type"] == cell_type).all()
    assert "levels" in out.layers
    assert out.uns["scmulan_generate"]["params"]["n_cells"] == 4
    direct = atlas_model.generate({"organ": organ, "cell_type": cell_type}, n_cells=4, seed=1, progress=False)
    assert (out.layers["levels"] != direct.layers["levels"]).nnz == 0


def test_a_table_of_conditions_and_a_saved_model(atlas_model, atlas_model_dir):
    organs = atlas_model.vocab.categories("organ")[:2]
    table = pd.DataFrame({"organ": organs})
    from_dir = scmulan.tl.generate(atlas_model_dir, table, n_cells=2, seed=0, progress=False)
    from_model = scmulan.tl.generate(atlas_model, table, n_cells=2, seed=0, progress=False)
    assert list(from_dir.obs["organ"]) == [organs[0], organs[0], organs[1], organs[1]]
    assert (from_dir.X != from_model.X).nnz == 0
    assert np.array_equal(from_dir.obs["n_genes"], from_model.obs["n_genes"])


def test_unknown_categories_list_the_valid_ones(atlas_model):
    with pytest.raises(ValueError, match="valid ones") as info:
        scmulan.tl.generate(atlas_model, {"cell_type": "Unicorn cell"}, n_cells=1, progress=False)
    assert atlas_model.vocab.categories("cell_type")[0] in str(info.value)
