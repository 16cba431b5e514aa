"""Registration with ``setup_anndata`` and building a model from registered data (no training)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scmulan
from scmulan import SCMULAN

ALL_KEYS = {
    "organ_key": "organ",
    "region_key": "region",
    "coarse_cell_type_key": "coarse_cell_type",
    "cell_type_key": "cell_type",
    "sex_key": "sex",
    "age_key": "age",
    "technology_key": "technology",
    "disease_key": "disease",
}


def _categories(adata, column) -> set[str]:
    return set(adata.obs[column].dropna().astype(str))


def test_every_metadata_field_registers_and_enters_the_vocabulary(atlas):
    atlas.obs["donor"] = pd.Categorical(np.where(np.arange(atlas.n_obs) % 3, "d1", "d2"))
    X_before = atlas.X.copy()
    SCMULAN.setup_anndata(atlas, **ALL_KEYS, extra_metadata_keys=["donor"])
    model = SCMULAN(atlas, config="tiny")

    expected = {key.removesuffix("_key"): column for key, column in ALL_KEYS.items()} | {"donor": "donor"}
    assert model.obs_keys_ == expected
    assert set(model.vocab.metadata_fields) == set(expected)
    for field, column in expected.items():
        assert set(model.vocab.categories(field)) == _categories(atlas, column), field
    # registration adds scvi-tools bookkeeping only; the expression is untouched
    assert (atlas.X != X_before).nnz == 0


def test_the_vocabulary_holds_the_data_genes_in_order(atlas):
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    model = SCMULAN(atlas, config="tiny")
    assert model.vocab.genes == list(atlas.var_names)
    assert set(model.vocab.categories("cell_type")) == _categories(atlas, "cell_type")
    assert "organ" not in model.vocab.metadata_fields  # not registered, not in the vocabulary
    assert model.config.vocab_size == len(model.vocab)
    assert model.config.n_embd == 64  # the tiny preset


def test_genes_restricts_the_gene_set(atlas):
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    subset = list(atlas.var_names[[5, 1, 40, 17]])
    model = SCMULAN(atlas, config="tiny", genes=subset)
    assert model.vocab.genes == subset
    with pytest.raises(ValueError, match="1 of the requested `genes` are not in the data"):
        SCMULAN(atlas, config="tiny", genes=[*subset, "NOT_A_GENE"])


def test_overrides_change_the_network(atlas):
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    model = SCMULAN(atlas, config="tiny", n_layer=1, n_embd=32)
    assert (model.config.n_layer, model.config.n_embd) == (1, 32)
    assert len(model.module.blocks) == 1


def test_initial_weights_follow_the_seed_not_the_global_random_state(atlas):
    import torch

    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    first = SCMULAN(atlas, config="tiny").module.state_dict()
    torch.rand(1000)  # whatever ran before in the process
    state = torch.get_rng_state()
    again = SCMULAN(atlas, config="tiny").module.state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # building a model leaves the global stream alone
    other = SCMULAN(atlas, config="tiny", seed=1).module.state_dict()
    for name, weight in first.items():
        assert torch.equal(weight, again[name]), name
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])
    torch.manual_seed(3)
    unseeded = SCMULAN(atlas, config="tiny", seed=None).module.state_dict()
    torch.manual_seed(3)
    assert torch.equal(
        unseeded["blocks.0.attn.qkv.weight"],
        SCMULAN(atlas, config="tiny", seed=None).module.state_dict()["blocks.0.attn.qkv.weight"],
    )


def test_missing_labels_are_allowed(atlas):
    values = atlas.obs["cell_type"].astype(object).to_numpy()
    values[::4] = np.nan
    atlas.obs["cell_type"] = pd.Categorical(values)
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    model = SCMULAN(atlas, config="tiny")
    cats = model.vocab.categories("cell_type")
    assert set(cats) == _categories(atlas, "cell_type")
    assert "nan" not in cats
    assert "None" not in cats


def test_a_missing_obs_column_names_the_argument_and_lists_the_columns(atlas):
    with pytest.raises(ValueError, match="cell_type_key='celltype'") as info:
        SCMULAN.setup_anndata(atlas, cell_type_key="celltype")
    for column in ("organ", "cell_type", "disease"):
        assert repr(column) in str(info.value)
    with pytest.raises(ValueError, match="extra_metadata_keys='donor'"):
        SCMULAN.setup_anndata(atlas, extra_metadata_keys=["donor"])


def test_an_empty_anndata_is_refused_as_empty(atlas):
    empty = atlas[:0].copy()
    with pytest.raises(ValueError, match="The AnnData has no cells"):
        SCMULAN.setup_anndata(empty, cell_type_key="cell_type")
    assert "_scvi_uuid" not in empty.uns


def test_an_extra_key_may_not_shadow_a_built_in_field(atlas):
    with pytest.raises(ValueError, match="clashes with a built-in metadata field"):
        SCMULAN.setup_anndata(atlas, extra_metadata_keys=["organ"])


def test_an_unregistered_anndata_is_refused(atlas):
    with pytest.raises(ValueError, match=re.escape("scmulan.SCMULAN.setup_anndata(adata, ...)")):
        SCMULAN(atlas, config="tiny")


def test_no_anndata_points_to_the_loaders():
    with pytest.raises(ValueError, match="setup_anndata") as info:
        SCMULAN(None)
    assert "SCMULAN.load" in str(info.value)


def test_registered_counts_are_refused_with_the_fix():
    counts = scmulan.datasets.synthetic_atlas(n_cells=50, n_genes=100, n_coarse_types=3, n_fine_per_coarse=2,
                                              n_coarse_markers=8, n_fine_markers=4)  # fmt: skip
    assert sparse.issparse(counts.X)
    assert np.array_equal(counts.X.data, np.round(counts.X.data))  # really counts
    SCMULAN.setup_anndata(counts, cell_type_key="cell_type")
    with pytest.raises(ValueError, match=re.escape("scmulan.pp.prepare")) as info:
        SCMULAN(counts, config="tiny")
    assert "raw counts" in str(info.value)


def test_summary_names_the_configuration(atlas, capsys):
    SCMULAN.setup_anndata(atlas, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = SCMULAN(atlas, config="tiny")
    repr(model)  # scvi-tools prints the summary (rich) and returns ""
    text = " ".join(capsys.readouterr().out.split())
    assert "2 layers" in text
    assert f"vocabulary of {len(model.vocab)} entities" in text
    assert model.is_trained_ is False
