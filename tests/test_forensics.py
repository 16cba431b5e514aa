"""Input forensics: each kind of expression matrix gets its verdict, and the tools stop or warn with the fix.

The matrices are made with Scanpy (the independent oracle of what a user's pipeline produces) from random counts
drawn by hypothesis; the verdicts are those of the table in the FAQ ("Which input does scmulan accept?").
"""

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import sparse

import scmulan
from scmulan._data_kind import LOG_NORMALIZED_MAX, PATTERN_ROWS, detect_data_kind, summarize_matrix
from scmulan._validation import check_log_normalized, needs_normalization

FORMATS = {"dense": np.asarray, "csr": sparse.csr_matrix, "csc": sparse.csc_matrix, "coo": sparse.coo_matrix}
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def count_matrices(draw) -> np.ndarray:
    """Random scRNA-like counts: 4-40 cells, 12-60 genes, at least 3 distinct values per cell, unequal totals."""
    n_obs = draw(st.integers(4, 40))
    n_vars = draw(st.integers(12, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    mean = draw(st.floats(1.0, 6.0))
    density = draw(st.floats(0.4, 0.9))
    rng = np.random.default_rng(seed)
    counts = rng.poisson(mean, size=(n_obs, n_vars)) * (rng.random((n_obs, n_vars)) < density)
    counts[:, :3] = [1, 2, 5]  # every cell has values at 1, 2 and 5 times its factor
    counts[0, 3] += 1  # the cells' totals differ
    return counts.astype(np.float32)


def scanpy(counts: np.ndarray, *steps: str, target_sum: float = 1e4) -> np.ndarray:
    a = ad.AnnData(counts.copy())
    for step in steps:
        if step == "normalize":
            sc.pp.normalize_total(a, target_sum=target_sum)
        elif step == "log1p":
            sc.pp.log1p(a)
        elif step == "scale_uncentred":
            sc.pp.scale(a, zero_center=False)
        elif step == "scale":
            sc.pp.scale(a)
    return np.asarray(a.X, dtype=np.float32)


fmt = st.sampled_from(list(FORMATS))


@FAST
@given(counts=count_matrices(), fmt=fmt, target=st.sampled_from([1e4, 1e5, 1e6]))
def test_log1p_of_normalised_counts_is_the_expected_input(counts, fmt, target):
    x = scanpy(counts, "normalize", "log1p", target_sum=target)
    assert detect_data_kind(FORMATS[fmt](x)) == "log_normalized"
    # a gene subset of it (HVGs, pbmc68k_reduced's raw) too: the factor is per cell, not the total
    assert detect_data_kind(FORMATS[fmt](x[:, 1:])) == "log_normalized"


@FAST
@given(counts=count_matrices(), fmt=fmt)
def test_counts(counts, fmt):
    assert detect_data_kind(FORMATS[fmt](counts)) == "counts"
    assert needs_normalization(FORMATS[fmt](counts))


@FAST
@given(counts=count_matrices(), fmt=fmt)
def test_log1p_of_raw_counts(counts, fmt):
    x = FORMATS[fmt](scanpy(counts, "log1p"))
    assert detect_data_kind(x) == "log1p_counts"
    with pytest.raises(ValueError, match=r"log1p of raw counts.*normalize_total.*scmulan\.pp\.prepare"):
        needs_normalization(x)


@FAST
@given(counts=count_matrices(), fmt=fmt, divisor=st.sampled_from([10, 100, 1000, 64]))
def test_counts_divided_by_a_constant(counts, fmt, divisor):
    assume(counts.max() / divisor <= LOG_NORMALIZED_MAX)
    summary = summarize_matrix(FORMATS[fmt]((counts / divisor).astype(np.float32)))
    assert summary.kind == "scaled_counts"
    assert summary.factor == pytest.approx(1 / divisor, rel=1e-4)
    with pytest.raises(ValueError, match=rf"counts divided by {divisor}\b.*multiply back by {divisor}"):
        check_log_normalized(FORMATS[fmt](counts / divisor), where="scmulan.tl.annotate")


@FAST
@given(counts=count_matrices(), fmt=fmt)
def test_counts_normalised_to_a_small_total(counts, fmt):
    summary = summarize_matrix(FORMATS[fmt](scanpy(counts, "normalize", target_sum=1.0)))
    assert summary.kind == "scaled_counts"
    assert summary.factor is None  # one factor per cell, not one for all
    with pytest.raises(ValueError, match=r"scaled per cell but never logged.*normalize_total"):
        needs_normalization(FORMATS[fmt](scanpy(counts, "normalize", target_sum=1.0)))


@FAST
@given(counts=count_matrices(), fmt=fmt, target=st.sampled_from([1e4, 1e6]))
def test_normalised_unlogged_counts_tpm_cpm(counts, fmt, target):
    x = FORMATS[fmt](scanpy(counts, "normalize", target_sum=target))
    assert detect_data_kind(x) == "unlogged_nonint"
    assert needs_normalization(x)


@FAST
@given(counts=count_matrices(), fmt=fmt, logged=st.booleans())
def test_scaled_without_centring_is_refused(counts, fmt, logged):
    steps = ("normalize", "log1p", "scale_uncentred") if logged else ("scale_uncentred",)
    x = scanpy(counts, *steps)
    assume((x.var(axis=0, ddof=1) > 0).sum() >= 2)
    with pytest.raises(ValueError, match=r"variance of 1.*zero_center=False.*adata\.raw\.to_adata\(\)"):
        detect_data_kind(FORMATS[fmt](x))


@FAST
@given(counts=count_matrices(), fmt=fmt)
def test_scaled_and_centred_is_refused(counts, fmt):
    x = scanpy(counts, "normalize", "log1p", "scale")
    assume(x.min() < 0)
    with pytest.raises(ValueError, match=r"negative values.*scaled"):
        detect_data_kind(FORMATS[fmt](x))


@FAST
@given(counts=count_matrices(), fmt=fmt)
def test_other_data_warn_and_are_used_as_they_are(counts, fmt):
    x = scanpy(counts, "normalize", "log1p") / np.log(2)  # log2(1 + x): not log1p
    x = FORMATS[fmt](x)
    assert detect_data_kind(x) == "other"
    with pytest.warns(UserWarning, match=r"does not look like log1p of normalised counts.*layer=") as record:
        check_log_normalized(x, where="scmulan.tl.annotate")
    assert record[0].filename == __file__  # the warning points at the caller's line
    with pytest.warns(UserWarning, match="does not look like"):
        assert not needs_normalization(x)


def test_sampled_rows_are_bounded_and_deterministic():
    rng = np.random.default_rng(3)
    c = (rng.poisson(2.0, size=(3 * PATTERN_ROWS, 40)) * (rng.random((3 * PATTERN_ROWS, 40)) < 0.5)).astype(float)
    c[:, :3] = [1, 2, 5]
    c[0, 3] += 1
    x = sparse.csr_matrix(np.log1p(c).astype(np.float32))
    assert summarize_matrix(x) == summarize_matrix(x)
    assert summarize_matrix(x).kind == "log1p_counts"


def test_real_data(pbmc_reduced):
    # pbmc68k_reduced: raw is log1p(normalize_total) of 765 genes rounded to 3 decimals; X is scaled and centred
    assert detect_data_kind(pbmc_reduced.raw.X) == "log_normalized"
    with pytest.raises(ValueError, match="negative values"):
        detect_data_kind(pbmc_reduced.X)
    counts = scmulan.datasets.pbmc68k().X
    assert detect_data_kind(counts) == "counts"


@pytest.fixture(scope="module")
def pbmc_reduced() -> ad.AnnData:
    return sc.datasets.pbmc68k_reduced()


# ------------------------------------------------------------------------ what pp.prepare does with each kind


def _counts_adata() -> ad.AnnData:
    rng = np.random.default_rng(0)
    counts = (rng.poisson(3.0, size=(50, 40)) * (rng.random((50, 40)) < 0.6)).astype(np.float32)
    counts[:, :3] = [1, 2, 5]
    counts[0, 3] += 1
    return ad.AnnData(sparse.csr_matrix(counts))


@pytest.mark.parametrize(
    ("transform", "match"),
    [
        (lambda a: sc.pp.log1p(a), r"log1p of raw counts.*normalize_total"),
        (lambda a: setattr(a, "X", a.X / 100), r"counts divided by 100.*multiply back by 100"),
        (lambda a: sc.pp.scale(a, zero_center=False), r"zero_center=False"),
        (lambda a: (sc.pp.normalize_total(a, target_sum=1e4), sc.pp.log1p(a), sc.pp.scale(a)), "negative values"),
        (lambda a: sc.pp.normalize_total(a, target_sum=1), r"scaled per cell but never logged"),
    ],
    ids=["log1p_counts", "counts_over_100", "scale_uncentred", "scale", "proportions"],
)
def test_prepare_stops_on_misprocessed_input_and_leaves_adata_untouched(transform, match):
    adata = _counts_adata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transform(adata)
    before = adata.X.copy()
    with pytest.raises(ValueError, match=match):
        scmulan.pp.prepare(adata)
    assert "scmulan_prepare" not in adata.uns
    assert list(adata.layers) == []
    x, b = (m.toarray() if sparse.issparse(m) else m for m in (adata.X, before))
    np.testing.assert_array_equal(x, b)


@pytest.mark.parametrize("kind", ["counts", "log_normalized", "unlogged_nonint"])
def test_prepare_accepts_correct_input(kind):
    adata = _counts_adata()
    if kind == "log_normalized":
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    elif kind == "unlogged_nonint":
        sc.pp.normalize_total(adata, target_sum=1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TPM/CPM warning
        scmulan.pp.prepare(adata)
    assert adata.uns["scmulan_prepare"]["data_kind"] == kind
    assert detect_data_kind(adata.X) == "log_normalized"


def test_prepare_warns_on_other_and_keeps_x():
    adata = _counts_adata()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata, base=2)
    before = adata.X.copy()
    with pytest.warns(UserWarning, match="does not look like log1p of normalised counts") as record:
        scmulan.pp.prepare(adata)
    assert record[0].filename == __file__
    assert adata.uns["scmulan_prepare"]["data_kind"] == "other"
    assert not adata.uns["scmulan_prepare"]["normalized"]
    np.testing.assert_array_equal(adata.X.toarray(), before.toarray())
