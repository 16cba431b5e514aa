"""``generate(redraws=...)``: cells whose requested type the model's own annotation does not return are drawn again.

That redrawing confirms more cells and keeps the confirmed ones is tested on a trained model in
``tests/train/test_learning.py`` (the one-epoch model here confirms almost none).
"""

from __future__ import annotations

import numpy as np
import pytest

import scmulan

COMMON = {"seed": 5, "progress": False}


def asked_and_got(model: scmulan.SCMULAN, cells, condition: dict) -> np.ndarray:
    """Whether the model's annotation of ``cells`` returns both requested types (what ``type_confirmed`` claims)."""
    with pytest.warns(UserWarning, match="does not look like log1p"):  # de-binned values, not counts: said once
        labels = model.annotate(cells, progress=False, calibrated=False)
    fine = labels["fine"].astype(object).to_numpy() == condition["cell_type"]
    return fine & (labels["coarse"].astype(object).to_numpy() == condition["coarse_cell_type"])


@pytest.fixture(scope="module")
def condition(trained, reference) -> dict:
    """A fine type and its coarse parent, as a user asks for both."""
    fine = trained.vocab.categories("cell_type")[1]
    coarse = reference.obs.loc[reference.obs["cell_type"] == fine, "coarse_cell_type"].astype(str).iloc[0]
    return {"coarse_cell_type": coarse, "cell_type": fine}


@pytest.fixture(scope="module")
def redrawn(trained, condition):
    return trained.generate(condition, 40, redraws=3, **COMMON)


def test_type_confirmed_says_what_the_models_annotation_of_the_returned_cells_says(trained, condition, redrawn):
    confirmed = redrawn.obs["type_confirmed"].to_numpy()
    assert confirmed.dtype == bool
    assert np.array_equal(confirmed, asked_and_got(trained, redrawn, condition))
    assert redrawn.uns["scmulan_generate"]["params"]["redraws"] == 3


def test_the_same_seed_gives_the_same_redrawn_cells(trained, condition, redrawn):
    again = trained.generate(condition, 40, redraws=3, **COMMON)
    assert np.array_equal(again.layers["levels"].toarray(), redrawn.layers["levels"].toarray())
    assert np.array_equal(again.obs["type_confirmed"], redrawn.obs["type_confirmed"])


def test_the_default_redraws_a_cell_type_condition_and_nothing_else(trained, condition):
    typed = trained.generate(condition, 4, **COMMON)
    assert typed.uns["scmulan_generate"]["params"]["redraws"] == 2  # the documented default
    assert "type_confirmed" in typed.obs
    organ = trained.vocab.categories("organ")[0]
    for kwargs in (  # no cell type to confirm; a perturbation keeps the cells whose type it changed
        {"conditions": {"organ": organ}},
        {"conditions": None},
        {"conditions": condition, "gene_prompts": {trained.vocab.genes[0]: 8}},
    ):
        cells = trained.generate(n_cells=4, **kwargs, **COMMON)
        assert cells.uns["scmulan_generate"]["params"]["redraws"] == 0
        assert "type_confirmed" not in cells.obs


def test_perturbation_arms_are_never_redrawn(trained, condition):
    result = scmulan.tl.perturb(
        trained, condition, genes={trained.vocab.genes[0]: 9}, n_cells=6, seed=1, progress=False
    )
    assert result.uns["scmulan_perturb"]["params"]["redraws"] == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_redraws_are_refused(trained, condition, bad):
    with pytest.raises(ValueError, match="`redraws` must be an integer >= 0"):
        trained.generate(condition, 2, redraws=bad, **COMMON)


def test_redraws_need_a_cell_type_to_confirm(trained):
    organ = trained.vocab.categories("organ")[0]
    with pytest.raises(ValueError, match="add one to `conditions` or pass redraws=0"):
        trained.generate({"organ": organ}, 2, redraws=1, **COMMON)


def test_redraws_are_refused_with_the_originals_sampling(trained, condition):
    with pytest.raises(ValueError, match="pass redraws=0"):
        trained.generate(condition, 2, redraws=1, legacy=True, **COMMON)
