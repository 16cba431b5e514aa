"""Whether a tool can use an expression matrix: the checks the entry points run on their input.

The kind of values is found by :func:`scmulan._data_kind.summarize_matrix`; here each kind gets its verdict: an
error naming the fix, a warning, or a pass.
"""

from __future__ import annotations

from typing import Any

from scmulan._data_kind import LOG_NORMALIZED_MAX, MAX_ROWS, MatrixSummary, summarize_matrix


def refuse_misprocessed(summary: MatrixSummary, *, name: str = "X", where: str | None = None) -> None:
    """Raise for ``"log1p_counts"`` and ``"scaled_counts"``; warn for ``"other"``; pass the other kinds.

    Parameters
    ----------
    summary
        What :func:`summarize_matrix` found.
    name
        How the matrix is named in messages.
    where
        The calling function, named in the message (``None``: not named).

    Raises
    ------
    ValueError
        For log1p of raw counts and for counts scaled per cell but never logged, naming the fix.
    """
    prefix = f"`{where}` needs log-normalised expression, but " if where else ""
    if summary.kind == "log1p_counts":
        msg = (
            f"{prefix}`{name}` looks like log1p of raw counts: expm1({name}) is whole numbers and the cells' "
            "totals differ, so `normalize_total` was skipped. Pass the counts to `scmulan.pp.prepare` "
            "(`np.expm1` of the matrix recovers them, or use a counts layer via `layer=`), or run "
            "`sc.pp.normalize_total(adata, target_sum=1e4)` on the counts before `sc.pp.log1p`."
        )
        raise ValueError(msg)
    if summary.kind == "scaled_counts":
        if summary.factor is not None:
            k = 1 / summary.factor
            k = round(k) if abs(k - round(k)) < 1e-6 * k else k
            found = (
                f"counts divided by {k:g} ({name} × {k:g} is whole numbers), not log-normalised data. "
                f"Pass the counts to `scmulan.pp.prepare`: multiply back by {k:g}, or use a counts layer via "
                "`layer=`."
            )
        else:
            found = (
                "counts scaled per cell but never logged (each cell's values are whole multiples of one factor, "
                "e.g. `sc.pp.normalize_total(adata, target_sum=1)` output). Pass the raw counts to "
                "`scmulan.pp.prepare` (a counts layer via `layer=`), or normalise to 1e4 and log1p "
                "(`sc.pp.normalize_total(adata, target_sum=1e4)`, then `sc.pp.log1p(adata)`)."
            )
        msg = f"{prefix}`{name}` looks like {found}"
        raise ValueError(msg)
    if summary.kind == "other":
        from scmulan._warnings import warn

        msg = (
            f"`{name}` does not look like log1p of normalised counts: no per-cell factor makes expm1({name}) whole "
            "multiples of it (imputed, batch-corrected, log2 or coarsely rounded data?). scmulan uses it as "
            "log-normalised expression; if it is not, pass the counts to `scmulan.pp.prepare` (`layer=`)."
        )
        warn(msg)


def needs_normalization(X: Any, *, name: str = "X", max_rows: int | None = MAX_ROWS) -> bool:
    """Whether ``X`` must be normalised (counts, TPM/CPM) or is used as it is (log-normalised); refuse the rest.

    Parameters
    ----------
    X
        A matrix of expression values, e.g. the first rows of a corpus shard.
    name
        How ``X`` is named in messages.
    max_rows
        Inspect at most this many evenly spaced rows; ``None`` inspects every row.

    Returns
    -------
    ``True`` for ``"counts"`` and ``"unlogged_nonint"``; ``False`` for ``"log_normalized"`` and ``"other"`` (with
    the warning of :func:`refuse_misprocessed`).

    Raises
    ------
    ValueError
        The errors of :func:`summarize_matrix` and :func:`refuse_misprocessed`.
    """
    summary = summarize_matrix(X, name=name, max_rows=max_rows)
    refuse_misprocessed(summary, name=name)
    return summary.kind in {"counts", "unlogged_nonint"}


def check_log_normalized(X: Any, *, where: str, name: str = "X", max_rows: int | None = MAX_ROWS) -> None:
    """Raise unless ``X`` looks log-normalised (:func:`~scmulan._data_kind.detect_data_kind`); warn when unsure.

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
        If ``X`` holds counts or unlogged values (telling the user to run :func:`scmulan.pp.prepare`), log1p of
        raw counts or counts scaled per cell (:func:`refuse_misprocessed`), and the specific errors of
        :func:`~scmulan._data_kind.detect_data_kind` (NaN, inf, negative/scaled, empty, all zero).
    """
    summary = summarize_matrix(X, name=name, max_rows=max_rows)
    if summary.kind in {"log_normalized", "log1p_counts", "scaled_counts", "other"}:
        refuse_misprocessed(summary, name=name, where=where)
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
