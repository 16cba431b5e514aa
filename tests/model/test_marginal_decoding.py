"""``annotate(marginal=True)``: the fine type chosen by its probability summed over the coarse types."""

from __future__ import annotations

import numpy as np
import pytest

import scmulan


def test_marginal_confidence_is_the_fine_probability_summed_over_coarse_types(trained, query):
    greedy = trained.annotate(query, progress=False, calibrated=False, marginal=False)
    summed = trained.annotate(query, progress=False, calibrated=False, marginal=True)
    path = (summed["coarse_confidence"] * summed["fine_confidence"]).to_numpy()
    # P(fine) = sum over coarse types of P(c) P(fine | c) >= the term of the chosen coarse type
    assert (summed["confidence"].to_numpy() >= path - 1e-6).all()
    assert (summed["confidence"].to_numpy() <= 1 + 1e-6).all()
    # where greedy decoding is sure of the coarse type, the sum is that one term: the same fine type
    sure = (greedy["coarse_confidence"] > 0.999).to_numpy()
    same = greedy["fine"].astype(str).to_numpy() == summed["fine"].astype(str).to_numpy()
    assert same[sure].all()
    assert not same.all()  # summing changed some fine types on this model: the checks above can fail
    assert set(summed["coarse"].dropna().astype(str)) <= set(trained.vocab.categories("coarse_cell_type"))


def test_marginal_reaches_tl_annotate_and_its_params(trained, query):
    adata = query.copy()
    scmulan.tl.annotate(adata, trained, marginal=True, progress=False, calibrated=False)
    direct = trained.annotate(query, progress=False, calibrated=False, marginal=True)
    assert (adata.obs["scmulan_fine"].astype(str).to_numpy() == direct["fine"].astype(str).to_numpy()).all()
    np.testing.assert_allclose(adata.obs["scmulan_confidence"].to_numpy(), direct["confidence"].to_numpy())
    assert adata.uns["scmulan"]["params"]["marginal"] is True


def test_marginal_needs_constrained_decoding(trained, query):
    with pytest.raises(ValueError, match="constrained=True"):
        trained.annotate(query, progress=False, marginal=True, constrained=False)
