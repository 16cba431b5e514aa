"""Levels: ten equal-width bins per cell, checked against the original's ``np.digitize(np.linspace)``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scmulan.sentence import expression_levels


def digitize_oracle(v: np.ndarray) -> np.ndarray:
    """The original scMulan's binning of one cell's expressed values (float32 edges under NumPy 2)."""
    v = np.asarray(v, dtype=np.float32)
    return np.digitize(v, np.linspace(0, v.max(), 11), right=True)


positive = st.floats(min_value=float(np.float32(1e-20)), max_value=1e6, width=32, allow_subnormal=False)


@st.composite
def expressed_cells(draw) -> np.ndarray:
    """Positive float32 values of one cell, mixing random values, exact bin edges of the max, ties, tiny values."""
    m = draw(positive)
    edges = np.linspace(0, np.float32(m), 11)[1:]  # float32 edges, incl. the max itself
    pool = st.one_of(
        st.floats(min_value=0.0, max_value=float(m), width=32, exclude_min=True, allow_subnormal=False),
        st.sampled_from([float(e) for e in edges if e > 0]),
        st.sampled_from(
            [float(np.float32(1e-30)), float(np.float32(1e-7)), float(np.nextafter(np.float32(0), np.float32(1)))]
        ),
    )
    v = draw(arrays(np.float32, st.integers(0, 30), elements=pool))
    v = np.append(v, np.float32(m))  # the max is in the cell
    v = v[v > 0]
    draw(st.randoms()).shuffle(v)
    return v


@settings(max_examples=300, deadline=None)
@given(expressed_cells())
def test_levels_match_digitize_linspace(v):
    got = expression_levels(v, v.max())
    np.testing.assert_array_equal(got, digitize_oracle(v))
    assert got.dtype == np.int64
    assert got.min() >= 1
    assert got.max() <= 10
    assert (got[v == v.max()] == 10).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(expressed_cells(), min_size=1, max_size=6))
def test_levels_vectorised_over_cells(cells):
    """Many cells at once, each against its own max (broadcast ``cell_max``), equal the per-cell oracle."""
    values = np.concatenate(cells)
    cell_max = np.concatenate([np.full(len(c), c.max(), dtype=np.float32) for c in cells])
    got = expression_levels(values, cell_max)
    np.testing.assert_array_equal(got, np.concatenate([digitize_oracle(c) for c in cells]))


def test_levels_hand_cases():
    # A value exactly on an edge goes to the lower bin; float32 edges of max 2 are exactly 0.2 k (as float32).
    edges = np.float32([0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0])
    np.testing.assert_array_equal(expression_levels(edges, np.float32(2.0)), np.arange(1, 11))
    np.testing.assert_array_equal(expression_levels(np.float32([1.7] * 4), np.float32(1.7)), [10] * 4)
    np.testing.assert_array_equal(expression_levels(np.float32([1e-6, 5.0]), np.float32(5.0)), [1, 10])
    np.testing.assert_array_equal(expression_levels(np.float32([0.5, 1, 1, 2, 2]), np.float32(2.0)), [3, 5, 5, 10, 10])
    # Just above an edge moves up one level.
    above = np.nextafter(np.float32(1.0), np.float32(2.0))
    assert expression_levels(np.float32([above]), np.float32(2.0))[0] == 6


def count_edges_oracle(values: np.ndarray, cell_max: np.ndarray) -> np.ndarray:
    """1 + the number of float32 edges ``float32(k) * float32(m / 10)``, k = 1..9, strictly below each value."""
    v = np.asarray(values, dtype=np.float32)
    step = (np.asarray(cell_max, dtype=np.float32) / np.float32(10)).astype(np.float32)
    return 1 + sum((np.float32(k) * step < v).astype(np.int64) for k in range(1, 10))


any_positive = st.floats(
    min_value=0.0, max_value=float(np.finfo(np.float32).max), width=32, exclude_min=True, allow_subnormal=True
)


@st.composite
def cells_near_edges(draw) -> tuple[np.ndarray, np.ndarray]:
    """One cell with any positive float32 maximum (subnormal to huge) and values on, and one ulp around, its edges."""
    m = np.float32(draw(any_positive))
    step = (m / np.float32(10)).astype(np.float32)
    edges = np.float32(np.arange(1, 11)) * step
    with np.errstate(over="ignore"):
        around = np.concatenate([edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(np.inf))])
    extra = draw(arrays(np.float32, st.integers(0, 20), elements=any_positive))
    v = np.concatenate([around, extra])
    v = v[(v > 0) & (v <= m)]
    v = np.append(v, m)
    return v, np.full(len(v), m, dtype=np.float32)


@settings(max_examples=400, deadline=None)
@given(cells_near_edges())
def test_levels_count_float32_edges_at_any_scale(cell):
    """The quotient-and-correct evaluation equals counting every float32 edge, down to subnormal maxima."""
    v, m = cell
    np.testing.assert_array_equal(expression_levels(v, m), count_edges_oracle(v, m))
    np.testing.assert_array_equal(expression_levels(v, m[0]), count_edges_oracle(v, m))  # a scalar maximum


def test_levels_keep_the_shape_of_their_input():
    v = np.float32([[0.5, 2.0], [0.1, 0.3]])
    np.testing.assert_array_equal(expression_levels(v, np.float32([[2.0], [0.3]])), [[3, 10], [4, 10]])
    assert expression_levels(np.float32(1.0), np.float32(2.0)) == 5
