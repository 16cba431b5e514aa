"""The C2ST AUROC that ``pl.generated_vs_real`` prints (and the demo reports)."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import scmulan
from scmulan._two_sample import generation_c2st


def _cells(shift: float, seed: int, n: int = 120) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.gamma(2.0, 0.5, size=(n, 30)).astype(np.float32)
    X[:, :5] += shift
    return ad.AnnData(X)


def _named(adata: ad.AnnData) -> ad.AnnData:
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    return adata


def test_same_distribution_is_near_chance_and_a_shift_is_found():
    real = _named(_cells(0.0, 0))
    same = _named(_cells(0.0, 1))
    shifted = _named(_cells(1.5, 2))
    assert generation_c2st(real, same) == pytest.approx(0.5, abs=0.12)
    assert generation_c2st(real, shifted) > 0.95


def test_the_figure_prints_the_auroc(tmp_path):
    real, shifted = _named(_cells(0.0, 0)), _named(_cells(1.5, 2))
    axes = scmulan.pl.generated_vs_real(real, shifted, show=False)
    expected = generation_c2st(real, shifted)
    assert axes[1].get_title().endswith(f"C2ST AUROC = {expected:.2f}")
