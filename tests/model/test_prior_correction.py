"""``annotate(prior_correction=τ)``: the reference's label prior removed from the label logits (logit adjustment)."""

from __future__ import annotations

import numpy as np
import pytest

import scmulan
from scmulan.model._annotation import _prior_bias


def _training_frequencies(model, field_key: str) -> dict[str, float]:
    """Training cells per category of ``field_key`` among the model's training rows (labelled cells only)."""
    labels = model.adata.obs[field_key].iloc[model.train_indices_].dropna().astype(str)
    return labels.value_counts(normalize=True).to_dict()


def test_the_correction_is_minus_tau_log_frequency_of_the_training_labels(trained):
    parts = trained.parts()
    bias = _prior_bias(parts, ["coarse_cell_type", "cell_type"], 0.7)
    vocab = trained.vocab
    for field in ("coarse_cell_type", "cell_type"):
        freq = _training_frequencies(trained, field)
        top = max(freq.values())
        for category, f in freq.items():
            expected = -0.7 * (np.log(f) - np.log(top))
            assert bias[vocab.token_id(field, category)] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    others = ~(vocab.field_mask("coarse_cell_type") | vocab.field_mask("cell_type"))
    assert (bias[others] == 0).all()  # genes, metadata, <E>: untouched
    assert (bias >= 0).all()  # shifted so that the most frequent type gets 0: nothing unseen is promoted
    assert _prior_bias(parts, ["cell_type"], 0.0) is None


def test_a_larger_correction_moves_cells_only_towards_rarer_types(trained, query):
    # argmax(logit + b) can only leave a type for one with a larger bias b, i.e. a rarer training type
    plain = trained.annotate(query, progress=False, calibrated=False)
    adjusted = trained.annotate(query, progress=False, calibrated=False, prior_correction=3.0)
    freq = _training_frequencies(trained, "coarse_cell_type")
    moved = plain["coarse"].astype(str) != adjusted["coarse"].astype(str)
    assert moved.any()  # the correction changed some coarse labels: the check below can fail
    before = plain.loc[moved, "coarse"].astype(str).map(freq)
    after = adjusted.loc[moved, "coarse"].astype(str).map(freq)
    assert (after < before).all()
    # no correction is the default, and 0 decodes exactly as before
    again = trained.annotate(query, progress=False, calibrated=False, prior_correction=0.0)
    assert plain.equals(again)


def test_the_correction_reaches_tl_annotate_and_its_params(trained, query):
    adata = query.copy()
    scmulan.tl.annotate(adata, trained, prior_correction=3.0, progress=False)
    direct = trained.annotate(query, progress=False, prior_correction=3.0)
    assert (adata.obs["scmulan_fine"].astype(str).to_numpy() == direct["fine"].astype(str).to_numpy()).all()
    assert adata.uns["scmulan"]["params"]["prior_correction"] == 3.0


@pytest.mark.parametrize("tau", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_infinite_correction_is_refused(trained, query, tau):
    with pytest.raises(ValueError, match="prior_correction"):
        trained.annotate(query, progress=False, prior_correction=tau)


def test_a_model_without_training_counts_says_to_pass_zero(saved_dir, query):
    model = scmulan.SCMULAN.load(saved_dir)
    model.gene_counts_ = None  # as the imported original checkpoint, or a model saved before the table existed
    with pytest.raises(ValueError, match="prior_correction=0"):
        model.annotate(query, progress=False, prior_correction=1.0)
    assert len(model.annotate(query, progress=False)) == query.n_obs  # the default still annotates
