"""What kind of values an expression matrix holds: raw counts, log-normalised, or one of the misprocessed kinds.

The classification looks only at the stored values of the matrix (never densifying a sparse one) and
follows these rules, in order (the table in the FAQ, "Which input does scmulan accept?", says what each tool
does with each kind):

1. NaN, +/-inf, negative values (``sc.pp.scale`` output), an empty or an all-zero matrix raise a specific
   :class:`ValueError`.
2. ``"counts"``: every value is a non-negative integer (whatever the dtype) and the maximum is > 0.
3. Scaled without centring (``sc.pp.scale(zero_center=False)``) raises a :class:`ValueError`: most genes have a
   variance of exactly 1 (unbiased, as Scanpy computes it; on a row sample: within 25 %).
4. ``"unlogged_nonint"``: non-integer values above :data:`LOG_NORMALIZED_MAX` (15), e.g. TPM/CPM or counts
   normalised but never logged. ``log1p`` of data normalised to 1e4 counts per cell has a maximum of
   ``log1p(1e4) ≈ 9.2``; 15 leaves room for larger targets (``log1p(1e6) ≈ 13.8``).
5. Non-integer values up to 15 are tested, on at most :data:`PATTERN_ROWS` evenly spaced rows, for the
   exact structure counts leave: the values of one cell are whole multiples of one per-cell factor.

   - ``"log1p_counts"``: ``expm1(X)`` is whole numbers and the cells' totals of ``expm1(X)`` differ,
     i.e. ``log1p`` of raw counts without ``normalize_total``;
   - ``"scaled_counts"``: ``X`` itself is whole multiples of a per-cell factor, i.e. counts divided by a
     constant (``counts / 100``) or normalised to a small total, never logged;
   - ``"log_normalized"``: ``expm1(X)`` is whole multiples of a per-cell factor (``log1p`` of
     ``normalize_total`` output, whatever the target sum or gene subset), or no row has enough distinct
     values to tell;
   - ``"other"``: none of these (e.g. imputed, batch-corrected or ``log2`` data, or values rounded coarsely).

A row takes part in a test when at least 3 of its values are at most 30 times its factor (with at least two
different multiples for a free factor); a test holds when 90 % of those rows fit within a relative tolerance of
0.2 %, which covers float32 storage and values rounded to three decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse

from scmulan._matrix_chunks import blocks, row_sample, rows_to_check

DataKind = Literal["counts", "unlogged_nonint", "log_normalized", "log1p_counts", "scaled_counts", "other"]

#: Largest maximum a matrix of non-integer values may have to be called log-normalised.
LOG_NORMALIZED_MAX = 15.0
#: Above this many rows, :func:`detect_data_kind` inspects this many evenly spaced rows by default.
MAX_ROWS = 10_000
#: Rows (evenly spaced, deterministic) the per-cell factor tests of rule 5 inspect.
PATTERN_ROWS = 1_000
# rule 5: values per row, largest multiple counted, relative tolerance, fraction of rows that must fit
_MIN_VALUES = 3
_MAX_MULTIPLE = 30
_RTOL = 2e-3
_FIT_FRACTION = 0.9
# rule 3: exact (all rows) and sampled criteria for unit variance per gene
_UNIT_VAR_EXACT = (1e-3, 0.25)  # |var - 1| below, fraction of non-constant genes at least
_UNIT_VAR_SAMPLED = (0.25, 0.8, 30, 10)  # |var - 1| below, fraction, non-zeros per gene, genes at least

_SCALED_HINT = (
    "It looks scaled/centred, e.g. `sc.pp.scale` output; pass unscaled data such as "
    "`adata.raw.to_adata()` or a counts layer (`layer=`)."
)


@dataclass(frozen=True)
class MatrixSummary:
    """What :func:`summarize_matrix` found."""

    kind: DataKind
    #: Largest value seen.
    max_value: float
    #: Rows inspected.
    n_rows: int
    #: Whether only a sample of the rows was inspected.
    sampled: bool
    #: For ``"scaled_counts"`` with one factor for every cell: that factor (``0.01`` for ``counts / 100``).
    factor: float | None = None


class _ValueStats:
    """Running checks over value blocks: bad values, maximum, integrality, per-gene moments."""

    def __init__(self, n_cols: int, name: str) -> None:
        self.name = name
        self.max_value = 0.0
        self.all_integer = True
        self.sum = np.zeros(n_cols)
        self.sum_sq = np.zeros(n_cols)
        self.nonzero = np.zeros(n_cols, dtype=np.int64)

    def add(self, values: np.ndarray, cols: np.ndarray | None) -> None:
        if values.size == 0:
            return
        kind = values.dtype.kind
        if kind == "b":
            values = values.astype(np.uint8)
        elif kind == "f":
            self._check_finite(values)
        elif kind not in "iu":
            msg = f"`{self.name}` has dtype {values.dtype}; expected a numeric (integer or floating point) matrix."
            raise ValueError(msg)
        minimum = values.min()
        if minimum < 0:
            msg = f"`{self.name}` contains negative values (minimum {float(minimum):.4g}). {_SCALED_HINT}"
            raise ValueError(msg)
        self.max_value = max(self.max_value, float(values.max()))
        if self.all_integer and kind == "f":
            self.all_integer = bool(np.array_equal(values, np.rint(values)))
        if self.all_integer:
            return  # counts: the moments are not needed
        v = values.astype(np.float64)
        n_cols = self.sum.size
        if cols is None:
            self.sum += v.sum(axis=0)
            self.sum_sq += np.square(v).sum(axis=0)
            self.nonzero += np.count_nonzero(v, axis=0)
        else:
            self.sum += np.bincount(cols, weights=v, minlength=n_cols)
            self.sum_sq += np.bincount(cols, weights=np.square(v), minlength=n_cols)
            self.nonzero += np.bincount(cols, weights=v != 0, minlength=n_cols).astype(np.int64)

    def _check_finite(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        if finite.all():
            return
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            msg = (
                f"`{self.name}` contains NaN values ({n_nan:,} found); expression values must be finite. "
                "Remove or impute them (e.g. `np.nan_to_num`), or pass a clean matrix via `layer=`."
            )
            raise ValueError(msg)
        msg = (
            f"`{self.name}` contains infinite values ({int((~finite).sum()):,} found); expression values must be "
            "finite. Check the upstream transformation (e.g. log of zero), or pass a clean matrix via `layer=`."
        )
        raise ValueError(msg)

    def unit_variance(self, n_rows: int, *, sampled: bool) -> bool:
        """Whether most genes have a variance of 1 (rule 3), as ``sc.pp.scale(zero_center=False)`` leaves them."""
        if n_rows < 3 or self.all_integer:
            return False
        var = (self.sum_sq - np.square(self.sum) / n_rows) / (n_rows - 1)
        if not sampled:
            tol, fraction = _UNIT_VAR_EXACT
            genes = var > 1e-6
            return bool(genes.any()) and float(np.mean(np.abs(var[genes] - 1) < tol)) >= fraction
        tol, fraction, min_nonzero, min_genes = _UNIT_VAR_SAMPLED
        genes = self.nonzero >= min_nonzero
        return int(genes.sum()) >= min_genes and float(np.mean(np.abs(var[genes] - 1) < tol)) >= fraction


@dataclass(frozen=True)
class _Fit:
    """How many rows took part in a per-cell factor test, how many fit, and the factors of those that fit."""

    n_informative: int
    n_fit: int
    factors: np.ndarray
    #: totals of the transformed values of the fitting rows
    totals: np.ndarray

    @property
    def holds(self) -> bool:
        return self.n_informative > 0 and self.n_fit >= _FIT_FRACTION * self.n_informative


def _fit_rows(sample: sparse.csr_matrix, *, logged: bool, free: bool) -> _Fit:
    """Test whether each row's values (``expm1`` of them if ``logged``) are whole multiples of one factor.

    With ``free`` the factor is the row's own (its smallest value divided by 1, 2 or 3, refined by least
    squares); otherwise it is 1 (whole numbers).
    """
    values = np.expm1(sample.data) if logged else sample.data
    n = sample.shape[0]
    lengths = np.diff(sample.indptr)
    row_of = np.repeat(np.arange(n), lengths)
    fit = np.zeros(n, dtype=bool)
    informative = np.zeros(n, dtype=bool)
    factors = np.full(n, np.nan)
    if values.size == 0:
        return _Fit(0, 0, factors[:0], factors[:0])
    if free:
        smallest = np.full(n, np.inf)
        np.minimum.at(smallest, row_of, values)
        starts = [smallest / d for d in (1, 2, 3)]
    else:
        starts = [np.ones(n)]
    for start in starts:
        factor = start
        for refine in (True, False):
            multiple = np.rint(values / factor[row_of])
            counted = (multiple >= 1) & (multiple <= _MAX_MULTIPLE)
            if refine and free:  # least squares on the counted values: robust to rounding of the smallest value
                num = np.bincount(row_of, weights=values * multiple * counted, minlength=n)
                den = np.bincount(row_of, weights=multiple * multiple * counted, minlength=n)
                factor = np.where(den > 0, num / np.where(den > 0, den, 1), factor)
        bad = counted & (np.abs(values - factor[row_of] * multiple) > _RTOL * values)
        n_counted = np.bincount(row_of, weights=counted, minlength=n)
        n_bad = np.bincount(row_of, weights=bad, minlength=n)
        row_ok = n_counted >= _MIN_VALUES
        if free:  # a factor that fits every value of a row of equal values proves nothing
            high = np.zeros(n)
            np.maximum.at(high, row_of, np.where(counted, multiple, 0))
            low = np.full(n, np.inf)
            np.minimum.at(low, row_of, np.where(counted, multiple, np.inf))
            row_ok &= high > low
        new_fit = row_ok & (n_bad == 0) & ~fit
        factors[new_fit] = factor[new_fit]
        fit |= new_fit
        informative |= row_ok
    totals = np.bincount(row_of, weights=values, minlength=n)[fit]
    return _Fit(int(informative.sum()), int(fit.sum()), factors[fit], totals)


def _equal(values: np.ndarray, rtol: float = 1e-3) -> bool:
    return values.size > 0 and float(values.max()) <= float(values.min()) * (1 + rtol)


def _pattern_kind(X: Any, n_rows: int) -> tuple[DataKind, float | None]:
    """Rule 5 on a deterministic sample of rows: the kind, and the common factor of ``"scaled_counts"``."""
    sample = row_sample(X, rows_to_check(n_rows, PATTERN_ROWS))
    whole = _fit_rows(sample, logged=True, free=False)
    if whole.holds and not _equal(whole.totals):
        return "log1p_counts", None
    linear = _fit_rows(sample, logged=False, free=True)
    if linear.holds:
        return "scaled_counts", float(np.median(linear.factors)) if _equal(linear.factors) else None
    logged = _fit_rows(sample, logged=True, free=True)
    if logged.holds or logged.n_informative == 0:  # no row with enough distinct values: cannot tell
        return "log_normalized", None
    return "other", None


def summarize_matrix(X: Any, *, name: str = "X", max_rows: int | None = MAX_ROWS) -> MatrixSummary:
    """Classify the values of ``X`` and report its maximum (see the module docstring for the rules).

    Parameters
    ----------
    X
        A 2-D matrix: numpy array, scipy sparse matrix/array, h5py dataset or a backed anndata sparse dataset.
    name
        How ``X`` is named in error messages, e.g. ``"X"`` or ``"layers['counts']"``.
    max_rows
        Inspect at most this many evenly spaced rows (deterministic); ``None`` inspects every row.

    Returns
    -------
    The kind of data, its largest value, and how many rows were inspected.
    """
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        msg = f"`{name}` must be a 2-D matrix (cells × genes), got {type(X).__name__} with shape {shape}."
        raise ValueError(msg)
    n_rows, n_cols = shape
    if n_rows == 0 or n_cols == 0:
        msg = f"`{name}` is empty ({n_rows} cells × {n_cols} genes); pass data with at least one cell and one gene."
        raise ValueError(msg)
    rows = rows_to_check(n_rows, max_rows)

    stats = _ValueStats(n_cols, name)
    for values, cols in blocks(X, rows):
        stats.add(values, cols)

    if stats.max_value == 0:
        if rows is not None:
            # the sample was all zero: decide on the full matrix before calling it empty
            return summarize_matrix(X, name=name, max_rows=None)
        msg = (
            f"`{name}` is all zeros: no cell expresses any gene. "
            "Check that you passed the expression matrix (e.g. the right `layer=`)."
        )
        raise ValueError(msg)

    n_checked = n_rows if rows is None else rows.size
    factor = None
    if stats.all_integer:
        data_kind: DataKind = "counts"
    elif stats.unit_variance(n_checked, sampled=rows is not None):
        msg = (
            f"`{name}` has a variance of 1 in most genes: it looks like `sc.pp.scale(zero_center=False)` output, "
            "which scmulan cannot use. Pass unscaled data such as `adata.raw.to_adata()` or a counts layer "
            "(`layer=`)."
        )
        raise ValueError(msg)
    elif stats.max_value > LOG_NORMALIZED_MAX:
        data_kind = "unlogged_nonint"
    else:
        data_kind, factor = _pattern_kind(X, n_rows)
    return MatrixSummary(
        kind=data_kind, max_value=stats.max_value, n_rows=n_checked, sampled=rows is not None, factor=factor
    )


def detect_data_kind(X: Any, *, name: str = "X", max_rows: int | None = MAX_ROWS) -> DataKind:
    """Classify a matrix: raw counts, log-normalised, unlogged, log1p of raw counts, scaled counts or other.

    Looks only at stored values; for matrices with more than ``max_rows`` rows, a deterministic sample
    of evenly spaced rows is inspected (at most :data:`PATTERN_ROWS` for the per-cell factor tests). The
    rules and thresholds are in the module docstring.

    Parameters
    ----------
    X
        A 2-D matrix: numpy array, scipy sparse matrix/array, h5py dataset or a backed anndata sparse dataset.
    name
        How ``X`` is named in error messages, e.g. ``"X"`` or ``"layers['counts']"``.
    max_rows
        Inspect at most this many evenly spaced rows; ``None`` inspects every row.

    Returns
    -------
    ``"counts"``, ``"unlogged_nonint"``, ``"log_normalized"``, ``"log1p_counts"``, ``"scaled_counts"`` or
    ``"other"``.

    Raises
    ------
    ValueError
        For NaN, infinite or negative values, data scaled without centring, and an empty or all-zero matrix.
    """
    return summarize_matrix(X, name=name, max_rows=max_rows).kind
