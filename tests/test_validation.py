"""`scmulan._data_kind` and `scmulan._validation`: classifying expression matrices and the check the tools run on query data."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import sparse

from scmulan._data_kind import LOG_NORMALIZED_MAX, detect_data_kind, summarize_matrix
from scmulan._validation import check_log_normalized

FORMATS = {
    "dense": np.asarray,
    "csr": sparse.csr_matrix,
    "csc": sparse.csc_matrix,
    "coo": sparse.coo_matrix,
    "csr_array": sparse.csr_array,
}


def random_counts(n_obs: int = 60, n_vars: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, size=(n_obs, n_vars)) * (rng.random((n_obs, n_vars)) < 0.3)
    x[0, 0] = 7  # at least one positive value
    return x


@pytest.fixture(scope="module")
def pbmc() -> ad.AnnData:
    return sc.datasets.pbmc68k_reduced()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_counts(fmt, dtype):
    x = FORMATS[fmt](random_counts().astype(dtype))
    assert detect_data_kind(x) == "counts"


@pytest.mark.parametrize("fmt", FORMATS)
def test_log_normalized(pbmc, fmt):
    x = FORMATS[fmt](pbmc.raw.X.toarray())
    assert detect_data_kind(x) == "log_normalized"
    # an independent log-normalisation of counts is recognised too
    a = ad.AnnData(random_counts().astype(np.float32))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    assert detect_data_kind(FORMATS[fmt](a.X)) == "log_normalized"


def test_unlogged_nonint_tpm_like():
    counts = random_counts().astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    cpm = np.divide(counts * 1e6, totals, out=np.zeros_like(counts), where=totals > 0)
    assert cpm.max() > LOG_NORMALIZED_MAX
    assert detect_data_kind(sparse.csr_matrix(cpm)) == "unlogged_nonint"
    # the threshold itself: non-integer data just above it is unlogged, just below is log-normalised
    x = np.full((3, 3), 0.5)
    x[0, 0] = LOG_NORMALIZED_MAX + 0.5
    assert detect_data_kind(x) == "unlogged_nonint"
    x[0, 0] = LOG_NORMALIZED_MAX - 0.37  # not a whole multiple of 0.5 (14.5 would be: counts / 2)
    assert detect_data_kind(x) == "log_normalized"


def test_scaled_data_rejected(pbmc):
    # pbmc68k_reduced().X is sc.pp.scale output
    with pytest.raises(ValueError, match=r"negative values.*scaled.*adata\.raw.*layer="):
        detect_data_kind(pbmc.X)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.nan, r"NaN values \(1 found\).*layer="),
        (np.inf, r"infinite values \(1 found\)"),
        (-np.inf, r"infinite values"),
        (-1.0, r"negative values \(minimum -1\).*scaled"),
    ],
)
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_bad_values_raise(bad, match, fmt):
    x = random_counts().astype(np.float32)
    x[5, 3] = bad
    with pytest.raises(ValueError, match=match):
        detect_data_kind(FORMATS[fmt](x), max_rows=None)


def test_all_zero_and_empty_raise():
    with pytest.raises(ValueError, match="all zeros"):
        detect_data_kind(sparse.csr_matrix((10, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        detect_data_kind(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="2-D"):
        detect_data_kind(np.ones(5))
    with pytest.raises(ValueError, match="numeric"):
        detect_data_kind(np.array([["a"]], dtype=object))


def test_sampling_is_deterministic_and_falls_back_on_all_zero_sample():
    x = np.zeros((1000, 4), dtype=np.float32)
    x[1:999:2, 1] = 0.5  # only odd rows are non-zero; the sample of 2 rows (0 and 999) sees none
    summary = summarize_matrix(x, max_rows=2)
    assert summary.kind == "log_normalized"
    assert not summary.sampled  # fell back to the whole matrix
    x[3, 2] = 1.5
    sampled = summarize_matrix(x, max_rows=100)
    assert sampled.sampled
    assert sampled.n_rows == 100
    assert sampled == summarize_matrix(x, max_rows=100)


def test_name_appears_in_messages():
    with pytest.raises(ValueError, match=r"`layers\['counts'\]` contains negative"):
        detect_data_kind(-np.ones((2, 2)), name="layers['counts']")


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_backed_matrices(tmp_path, pbmc, fmt):
    a = ad.AnnData(FORMATS[fmt](random_counts(n_obs=50).astype(np.float32)))
    a.layers["log"] = FORMATS[fmt](pbmc.raw.X[:50, :30].toarray())
    path = tmp_path / "x.h5ad"
    a.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    assert detect_data_kind(backed.X) == "counts"
    assert detect_data_kind(backed.X, max_rows=7) == "counts"
    backed.file.close()


def test_check_log_normalized(pbmc):
    check_log_normalized(pbmc.raw.X, where="scmulan.tl.annotate")  # passes
    with pytest.raises(ValueError, match=r"`scmulan\.tl\.annotate`.*raw counts.*scmulan\.pp\.prepare\(adata\)"):
        check_log_normalized(sparse.csr_matrix(random_counts()), where="scmulan.tl.annotate")
    cpm = random_counts() * 1234.5
    with pytest.raises(ValueError, match=r"TPM/CPM.*scmulan\.pp\.prepare"):
        check_log_normalized(cpm, where="scmulan.tl.embed")
    # the specific errors pass through
    with pytest.raises(ValueError, match="scaled"):
        check_log_normalized(pbmc.X, where="scmulan.tl.embed")


@st.composite
def integer_matrices(draw):
    dtype = draw(st.sampled_from([np.int32, np.int64, np.uint16, np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12))
    values = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 60_000)))
    values.flat[draw(st.integers(0, values.size - 1))] = draw(st.integers(1, 60_000))  # not all zero
    values = values.astype(dtype)
    return draw(st.sampled_from([np.asarray, sparse.csr_matrix, sparse.csc_matrix]))(values)


@settings(max_examples=100, deadline=None)
@given(x=integer_matrices(), max_rows=st.one_of(st.none(), st.integers(1, 12)))
def test_integer_valued_is_always_counts(x, max_rows):
    assert detect_data_kind(x, max_rows=max_rows) == "counts"
