"""De-binning within a level's range (next-entity models) vs the level mean (set objective, legacy)."""

from __future__ import annotations

import numpy as np

from scmulan.model._debin import debin


def test_without_rng_the_level_mean_is_returned():
    table = np.tile(np.linspace(0, 5, 11, dtype=np.float32), (3, 1))
    assert np.array_equal(debin(table, np.array([1, 2]), np.array([3, 7])), table[[1, 2], [3, 7]])


def test_values_spread_within_the_level_range_around_the_mean():
    table = np.zeros((2, 11), dtype=np.float32)
    table[1] = np.arange(11) * 0.5  # mean of level k at the bin centre: 0.5 k ~ (k - 0.5) / 10 of a maximum of ~5
    levels = np.repeat(np.arange(1, 11), 2000)
    values = debin(table, np.ones_like(levels), levels, rng=np.random.default_rng(0))
    for k in range(1, 11):
        v = values[levels == k]
        low, high = table[1, k] * (k - 1) / (k - 0.5), table[1, k] * k / (k - 0.5)
        assert v.min() > low - 1e-6
        assert v.max() <= min(high, table[1, k] if k == 10 else high) + 1e-6
        assert v.std() > 0  # a spread, not one value per level
        if k < 10:
            assert abs(v.mean() - table[1, k]) < 0.02 * table[1, k]  # unbiased within the level
    again = debin(table, np.ones_like(levels), levels, rng=np.random.default_rng(0))
    assert np.array_equal(values, again)


def test_without_a_table_levels_are_fractions_of_the_maximum():
    assert np.allclose(debin(None, np.array([5]), np.array([4]), rng=np.random.default_rng(0)), [0.4])
