"""Calibrated confidences and open-set detection: the statistics on known data, then through the model class."""

from __future__ import annotations

import numpy as np
import pytest

import scmulan
from scmulan.model._calibration import (
    UNKNOWN,
    Calibration,
    expected_calibration_error,
    fit_calibration,
    mahalanobis_score,
)


def test_expected_calibration_error_on_known_cases():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 20000)
    calibrated = rng.uniform(0, 1, 20000) < conf  # right with exactly the stated probability
    assert expected_calibration_error(conf, calibrated) < 0.02
    overconfident = rng.uniform(0, 1, 20000) < 0.5  # right half the time whatever the confidence says
    assert expected_calibration_error(np.full(20000, 0.99), overconfident) == pytest.approx(0.49, abs=0.02)
    assert np.isnan(expected_calibration_error([np.nan], [True]))


def _clusters(rng, centres, n, d=8):
    x = np.concatenate([rng.normal(c, 1.0, (n, d)) for c in centres])
    y = np.repeat([f"type{k}" for k in range(len(centres))], n)
    return x, y


def test_fit_calibration_flags_an_unseen_type_and_calibrates():
    rng = np.random.default_rng(1)
    centres = [np.zeros(8), np.full(8, 4.0), np.r_[np.full(4, 4.0), np.zeros(4)]]
    ref_x, ref_y = _clusters(rng, centres, 200)
    held_x, _ = _clusters(rng, centres, 100)
    # an over-confident classifier: says 0.95, right 70 % of the time
    conf = np.full(len(held_x), 0.95) + rng.uniform(-0.04, 0.04, len(held_x))
    correct = rng.uniform(0, 1, len(held_x)) < 0.7
    cal = fit_calibration(ref_x, ref_y, held_x, conf, correct, conf, correct, quantile=0.95)
    assert cal.ece_before > 0.2
    assert cal.ece_after < cal.ece_before
    assert cal.n_heldout == len(held_x)
    new_x, _ = _clusters(rng, [np.full(8, -5.0)], 100)  # a type the reference does not have
    known_x, _ = _clusters(rng, centres, 100)
    assert (cal.mahalanobis(new_x) > cal.threshold).mean() > 0.95
    assert (cal.mahalanobis(known_x) > cal.threshold).mean() < 0.12
    # the map is monotone and JSON round-trips
    p = np.linspace(0, 1, 50)
    assert np.all(np.diff(cal.confidence(p)) >= 0)
    again = Calibration.from_dict(cal.to_dict())
    np.testing.assert_array_equal(again.confidence(p), cal.confidence(p))
    with pytest.raises(ValueError, match="quantile"):
        fit_calibration(ref_x, ref_y, held_x, conf, correct, conf, correct, quantile=1.0)
    with pytest.raises(ValueError, match="at least 10"):
        fit_calibration(ref_x, ref_y, held_x[:5], conf[:5], correct[:5], conf[:5], correct[:5])


def test_mahalanobis_score_is_the_nearest_centroid_distance():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[1.0, 0.0], [9.0, 0.0], [5.0, 3.0]])
    score = mahalanobis_score(x, centroids, np.eye(2))
    np.testing.assert_allclose(score, [1.0, 1.0, np.sqrt(25 + 9)])


def test_training_with_validation_cells_calibrates(trained, query):
    assert trained.calibration_ is not None
    assert trained.calibration_["n_heldout"] >= 10
    frame = trained.annotate(query, progress=False)
    conf = frame["confidence"].dropna()
    assert conf.between(0, 1).all()
    assert "raw_confidence" in frame
    raw = trained.annotate(query, progress=False, calibrated=False)
    assert "raw_confidence" not in raw
    assert (frame["fine"].astype(str) == raw["fine"].astype(str)).all()  # labels never change
    # a higher raw confidence never gets a lower calibrated one
    order = np.argsort(frame["raw_confidence"].to_numpy())
    assert np.all(np.diff(frame["confidence"].to_numpy()[order]) >= -1e-6)


def test_open_set_labels_far_cells_unknown(trained, query):
    frame = trained.annotate(query, progress=False, open_set=True)
    assert "open_set_score" in frame
    flagged = frame["fine"].astype(str) == UNKNOWN
    assert (flagged == (frame["open_set_score"] > trained.calibration_["threshold"])).all()
    assert (frame["coarse"].astype(str)[flagged] == UNKNOWN).all()
    assert flagged.mean() < 0.5  # cells of the reference's own types are mostly recognised
    # cells far from every reference type (every gene at its maximum) are flagged
    far = query[:20].copy()
    far.X = np.full(far.shape, float(query.X.max()), dtype=np.float32)
    far_frame = trained.annotate(far, progress=False, open_set=True)
    assert (far_frame["fine"].astype(str) == UNKNOWN).mean() > 0.8


def test_open_set_needs_a_calibrated_model(saved_dir, reference, query, atlas):
    model = scmulan.SCMULAN.load(saved_dir, adata=reference)
    assert model.calibration_ is not None  # saved and loaded with the model
    model.calibration_ = None
    with pytest.raises(ValueError, match="calibrate"):
        model.annotate(query, progress=False, open_set=True)
    cal = model.calibrate(atlas[:60])  # labelled held-out cells given explicitly
    assert cal.n_heldout > 10
    assert model.annotate(query, progress=False, open_set=True)["open_set_score"].notna().all()
    with pytest.raises(ValueError, match="cell-type columns"):
        model.calibrate(query)
