"""What kind of values an expression matrix holds, and whether a tool can use it.

The classification looks only at the stored values of the matrix (never densifying a sparse one) and
follows these rules, in order:

1. NaN, +/-inf, negative values, an empty or an all-zero matrix raise a specific :class:`ValueError`.
2. ``"counts"``: every value is a non-negative integer (whatever the dtype) and the maximum is > 0.
3. ``"log_normalized"``: some values are not integers and the maximum is at most
   :data:`LOG_NORMALIZED_MAX` (15). ``log1p`` of data normalised to 1e4 counts per cell has a maximum of
   ``log1p(1e4) ≈ 9.2``, so 15 leaves room for larger targets (``log1p(1e6) ≈ 13.8``) while no usual
   unlogged normalisation (CPM, TPM, 1e4-normalised) stays that small.
4. ``"unlogged_nonint"``: non-integer values above :data:`LOG_NORMALIZED_MAX`, e.g. TPM/CPM or
   normalised but unlogged data.

Non-integer data with a small range that was never logged (e.g. per-cell proportions) is
indistinguishable from log-normalised data by these rules and is classified as ``"log_normalized"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse

DataKind = Literal["counts", "log_normalized", "unlogged_nonint"]

#: Largest maximum a matrix of non-integer values may have to be called log-normalised.
LOG_NORMALIZED_MAX = 15.0
#: Above this many rows, :func:`detect_data_kind` inspects this many evenly spaced rows by default.
MAX_ROWS = 10_000
# Stored values handled at once (bounds the temporary arrays of a check).
_CHUNK_VALUES = 1 << 22

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


def _rows_to_check(n_rows: int, max_rows: int | None) -> np.ndarray | None:
    """Evenly spaced, sorted row indices (deterministic), or ``None`` for all rows."""
    if max_rows is None or n_rows <= max_rows:
        return None
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def _stored_values(chunk: Any) -> np.ndarray:
    if sparse.issparse(chunk):
        return np.asarray(chunk.data).ravel()
    return np.asarray(chunk).ravel()


def _value_chunks(X: Any, rows: np.ndarray | None) -> Iterator[np.ndarray]:
    """Yield the stored values of the rows ``rows`` (all rows if ``None``), a bounded chunk at a time."""
    if sparse.issparse(X):
        if X.format not in {"csr", "csc", "coo"}:
            X = X.tocsr()
        if rows is None:
            # every stored value, regardless of layout: slices of `.data` are views, no copy
            data = X.data
            for start in range(0, data.size, _CHUNK_VALUES):
                yield data[start : start + _CHUNK_VALUES]
            return
        if X.format == "coo":
            X = X.tocsr()
        per_chunk = max(1, _CHUNK_VALUES // max(1, X.shape[1]))
        for start in range(0, rows.size, per_chunk):
            yield _stored_values(X[rows[start : start + per_chunk]])
        return
    # dense arrays, h5py datasets and anndata's backed sparse datasets: read row blocks
    n_rows, n_cols = X.shape
    per_chunk = max(1, _CHUNK_VALUES // max(1, n_cols))
    if rows is None:
        for start in range(0, n_rows, per_chunk):
            yield _stored_values(X[start : start + per_chunk])
    else:
        for start in range(0, rows.size, per_chunk):
            yield _stored_values(X[rows[start : start + per_chunk]])


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
    rows = _rows_to_check(n_rows, max_rows)

    max_value = 0.0
    all_integer = True
    for values in _value_chunks(X, rows):
        if values.size == 0:
            continue
        kind = values.dtype.kind
        if kind == "b":
            values = values.astype(np.uint8)
        elif kind == "f":
            finite = np.isfinite(values)
            if not finite.all():
                n_nan = int(np.isnan(values).sum())
                if n_nan:
                    msg = (
                        f"`{name}` contains NaN values ({n_nan:,} found); expression values must be finite. "
                        "Remove or impute them (e.g. `np.nan_to_num`), or pass a clean matrix via `layer=`."
                    )
                    raise ValueError(msg)
                n_inf = int((~finite).sum())
                msg = (
                    f"`{name}` contains infinite values ({n_inf:,} found); expression values must be finite. "
                    "Check the upstream transformation (e.g. log of zero), or pass a clean matrix via `layer=`."
                )
                raise ValueError(msg)
        elif kind not in "iu":
            msg = f"`{name}` has dtype {values.dtype}; expected a numeric (integer or floating point) matrix."
            raise ValueError(msg)
        minimum = values.min()
        if minimum < 0:
            msg = f"`{name}` contains negative values (minimum {float(minimum):.4g}). {_SCALED_HINT}"
            raise ValueError(msg)
        max_value = max(max_value, float(values.max()))
        if all_integer and kind == "f":
            all_integer = bool(np.array_equal(values, np.rint(values)))

    if max_value == 0:
        if rows is not None:
            # the sample was all zero: decide on the full matrix before calling it empty
            return summarize_matrix(X, name=name, max_rows=None)
        msg = (
            f"`{name}` is all zeros: no cell expresses any gene. "
            "Check that you passed the expression matrix (e.g. the right `layer=`)."
        )
        raise ValueError(msg)

    if all_integer:
        data_kind: DataKind = "counts"
    elif max_value <= LOG_NORMALIZED_MAX:
        data_kind = "log_normalized"
    else:
        data_kind = "unlogged_nonint"
    n_checked = n_rows if rows is None else rows.size
    return MatrixSummary(kind=data_kind, max_value=max_value, n_rows=n_checked, sampled=rows is not None)


def detect_data_kind(X: Any, *, name: str = "X", max_rows: int | None = MAX_ROWS) -> DataKind:
    """Classify a matrix as raw counts, log-normalised, or unlogged non-integer data.

    Looks only at stored values; for matrices with more than ``max_rows`` rows, a deterministic sample
    of evenly spaced rows is inspected. The rules and thresholds are in the module docstring:
    ``"counts"`` are non-negative integers; ``"log_normalized"`` are non-integer with maximum
    ≤ :data:`LOG_NORMALIZED_MAX` (15); ``"unlogged_nonint"`` are non-integer and larger (TPM/CPM-like).

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
    ``"counts"``, ``"log_normalized"`` or ``"unlogged_nonint"``.

    Raises
    ------
    ValueError
        For NaN, infinite or negative values (scaled data), and for an empty or all-zero matrix.
    """
    return summarize_matrix(X, name=name, max_rows=max_rows).kind


def check_log_normalized(X: Any, *, where: str, name: str = "X", max_rows: int | None = MAX_ROWS) -> None:
    """Raise unless ``X`` looks log-normalised (see :func:`detect_data_kind`).

    Parameters
    ----------
    X
        The query matrix a tool is about to use.
    where
        The calling function, named in the message, e.g. ``"scmulan.tl.annotate"``.
    name
        How ``X`` is named in error messages.
    max_rows
        Inspect at most this many evenly spaced rows; ``None`` inspects every row.

    Raises
    ------
    ValueError
        If ``X`` holds counts or unlogged values (telling the user to run :func:`scmulan.pp.prepare`), and the
        specific errors of :func:`detect_data_kind` (NaN, inf, negative/scaled, empty, all zero).
    """
    summary = summarize_matrix(X, name=name, max_rows=max_rows)
    if summary.kind == "log_normalized":
        return
    if summary.kind == "counts":
        found = f"non-negative integers (maximum {summary.max_value:g}), i.e. raw counts"
    else:
        found = (
            f"non-integer values up to {summary.max_value:g}, above the log-normalised maximum of "
            f"{LOG_NORMALIZED_MAX:g}, i.e. unlogged data such as TPM/CPM"
        )
    msg = (
        f"`{where}` needs log-normalised expression, but `{name}` holds {found}. "
        "Run `scmulan.pp.prepare(adata)` first (it applies normalize_total to 1e4 and log1p)."
    )
    raise ValueError(msg)
