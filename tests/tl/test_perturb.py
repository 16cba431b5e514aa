"""``scmulan.tl.perturb`` and ``scmulan.pl.perturbation``: matched arms, held genes, the effect table, the plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scmulan
from scmulan.tl._perturb import effect_table


@pytest.fixture(scope="module")
def perturbed(atlas_model):
    cell_type = atlas_model.vocab.categories("cell_type")[0]
    genes = {atlas_model.vocab.genes[0]: 10, atlas_model.vocab.genes[1]: 0}
    return scmulan.tl.perturb(atlas_model, {"cell_type": cell_type}, genes=genes, n_cells=12, seed=3, progress=False)


def test_control_and_perturbed_cells_are_matched(atlas_model, perturbed):
    obs = perturbed.obs
    assert list(obs["perturbation"].cat.categories) == ["control", "perturbed"]
    assert (obs["perturbation"] == "control").sum() == (obs["perturbation"] == "perturbed").sum() == 12
    assert np.array_equal(obs["pair"][obs["perturbation"] == "control"], np.arange(12))
    assert np.array_equal(obs["pair"][obs["perturbation"] == "perturbed"], np.arange(12))
    # the control arm is exactly what generate gives with the same seed (perturb: guidance 1, none; no redraws)
    condition = {"cell_type": str(obs["cell_type"].iloc[0])}
    control = atlas_model.generate(condition, 12, seed=3, guidance=1.0, redraws=0, progress=False)
    arm = perturbed[obs["perturbation"] == "control"]
    assert (sparse.csr_matrix(arm.layers["levels"]) != control.layers["levels"]).nnz == 0


def test_the_perturbed_genes_are_held_at_their_level(atlas_model, perturbed):
    up, down = atlas_model.vocab.genes[0], atlas_model.vocab.genes[1]
    levels = perturbed.layers["levels"]
    is_p = (perturbed.obs["perturbation"] == "perturbed").to_numpy()
    up_col = levels[:, perturbed.var_names.get_loc(up)].toarray().ravel()
    down_col = levels[:, perturbed.var_names.get_loc(down)].toarray().ravel()
    assert (up_col[is_p] == 10).all()
    assert (down_col[is_p] == 0).all()
    assert perturbed.uns["scmulan_perturb"]["genes"] == {up: 10, down: 0}


def test_the_effect_table_covers_every_gene_sorted_by_the_statistic(perturbed):
    effects = perturbed.uns["scmulan_perturb"]["effects"]
    assert set(effects.index) == set(perturbed.var_names)
    assert {"log2_fold_change", "t", "pvalue", "pvalue_adj", "perturbed"} <= set(effects.columns)
    assert np.all(np.diff(np.abs(effects["t"].to_numpy())) <= 1e-12)
    assert effects["perturbed"].sum() == 2
    assert (effects["pvalue_adj"] >= effects["pvalue"] - 1e-12).all()


def test_predicted_cell_types_are_written_for_a_model_that_annotates(perturbed):
    assert "predicted_cell_type" in perturbed.obs


def test_effect_table_recovers_a_planted_shift():
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 0.5, size=(400, 5))
    perturbed = np.r_[np.zeros(200, bool), np.ones(200, bool)]
    X[perturbed, 2] += 1.0  # gene c up in perturbed cells
    table = effect_table(sparse.csr_matrix(X), perturbed, pd.Index(list("abcde")))
    assert table.index[0] == "c"
    assert table.loc["c", "t"] > 10
    assert table.loc["c", "pvalue_adj"] < 1e-6
    assert table.loc["c", "log2_fold_change"] > 0.5
    assert (table.drop(index="c")["pvalue_adj"] > 0.01).all()


def test_bad_input_names_the_fix(atlas_model):
    with pytest.raises(ValueError, match="non-empty mapping"):
        scmulan.tl.perturb(atlas_model, None, genes={}, progress=False)
    with pytest.raises(ValueError, match="not model genes"):
        scmulan.tl.perturb(atlas_model, None, genes={"NOT_A_GENE": 5}, n_cells=2, progress=False)
    with pytest.raises(ValueError, match="Both control and perturbed"):
        effect_table(np.ones((3, 2)), np.ones(3, bool), pd.Index(["a", "b"]))


def test_the_plot_shows_top_genes_and_the_type_shift(perturbed, tmp_path):
    fig = scmulan.pl.perturbation(perturbed, n_genes=5, show=False, return_fig=True, save=tmp_path / "p.png")
    assert (tmp_path / "p.png").exists()
    genes_ax, types_ax = fig.axes[:2]
    assert len(genes_ax.patches) == 5
    shown = {t.get_text() for t in genes_ax.get_yticklabels()}
    assert not shown & set(perturbed.uns["scmulan_perturb"]["genes"])  # the held genes are not "responders"
    assert "control" in {t.get_text() for t in types_ax.get_legend().get_texts()}


def test_the_plot_refuses_other_data(perturbed):
    with pytest.raises(ValueError, match="tl.perturb"):
        scmulan.pl.perturbation(perturbed[:, :3].copy().T.copy(), show=False)
    with pytest.raises(ValueError, match="n_genes"):
        scmulan.pl.perturbation(perturbed, n_genes=0, show=False)
