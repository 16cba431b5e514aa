import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import scmulan


def test_bars_are_the_accuracy_per_confidence_bin(pbmc):
    ax = scmulan.pl.reliability(pbmc, truth_key="bulk_labels", n_bins=4, show=False)
    assert isinstance(ax, Axes)
    conf = pbmc.obs["scmulan_confidence"].to_numpy()
    right = pbmc.obs["scmulan_fine"].astype(str).to_numpy() == pbmc.obs["bulk_labels"].astype(str).to_numpy()
    ok = np.isfinite(conf)
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    expected = []
    for lo in (0, 0.25, 0.5, 0.75):
        sel = ok & (conf >= lo) & (conf < lo + 0.25 if lo < 0.75 else conf <= 1.0)
        expected.append(round(right[sel].mean(), 6))
    assert heights == sorted(expected)
    assert f"{int(ok.sum())} cells, ECE" in ax.get_title()
    # the fake confidence is random, the labels right 75-80 % of the time: far from calibrated
    ece = float(ax.get_title().split("ECE ")[1])
    assert ece > 0.15


def test_calibrated_confidence_has_a_small_ece(pbmc):
    rng = np.random.default_rng(3)
    conf = rng.random(pbmc.n_obs)
    truth = pbmc.obs["scmulan_fine"].astype(str).to_numpy().copy()
    wrong = rng.random(pbmc.n_obs) > conf  # right with probability = confidence
    truth[wrong] = "somewhere else"
    pbmc.obs["truth"] = truth
    pbmc.obs["scmulan_confidence"] = conf
    fig = scmulan.pl.reliability(pbmc, "truth", n_bins=5, return_fig=True, show=False)
    assert isinstance(fig, Figure)
    ece = float(fig.axes[0].get_title().split("ECE ")[1])
    assert ece < 0.12


def test_bad_input_names_the_fix(pbmc):
    with pytest.raises(ValueError, match="truth_key"):
        scmulan.pl.reliability(pbmc, truth_key="not_a_column", show=False)
    with pytest.raises(ValueError, match="level"):
        scmulan.pl.reliability(pbmc, truth_key="bulk_labels", level="medium", show=False)
