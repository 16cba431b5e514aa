"""Confusion matrix of true against predicted labels, as a DataFrame (the compute step of :func:`confusion`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from scmulan._anndata import get_modality

if TYPE_CHECKING:
    from mudata import MuData


def _labels_column(adata: AnnData, key: str, role: str) -> pd.Series:
    if key not in adata.obs:
        hint = (
            "run scmulan.tl.annotate(adata, model) first (it writes 'scmulan_coarse' and 'scmulan_fine'), "
            "or scmulan.tl.predict_metadata for 'scmulan_<field>'"
            if role == "pred_key"
            else "pass the obs column holding the reference labels"
        )
        msg = f"`adata.obs[{key!r}]` (`{role}`) not found; {hint}."
        raise ValueError(msg)
    return adata.obs[key]


def _category_order(column: pd.Series) -> list[str]:
    """Labels present in ``column``, as strings, in category order for a categorical, else by first appearance."""
    present = column.dropna()
    if isinstance(column.dtype, pd.CategoricalDtype):
        used = set(present.astype(str))
        return [str(c) for c in column.cat.categories if str(c) in used]
    return [str(v) for v in pd.unique(present.astype(str))]


def _paired_labels(
    adata: AnnData, true_key: str, pred_key: str, order: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """True and predicted labels (as strings) of the cells that have both, and the label order.

    The order is ``order`` if given (labels outside it are appended), else the union of the labels present:
    those of ``true_key`` first, then those only predicted.
    """
    true = _labels_column(adata, true_key, "true_key")
    pred = _labels_column(adata, pred_key, "pred_key")
    both = (true.notna() & pred.notna()).to_numpy()
    if not both.any():
        msg = f"No cell has both `obs[{true_key!r}]` and `obs[{pred_key!r}]`; nothing to compare."
        raise ValueError(msg)
    y_true = true[both].astype(str).to_numpy()
    y_pred = pred[both].astype(str).to_numpy()
    labels = [str(label) for label in order] if order is not None else []
    for label in [*_category_order(true[both]), *_category_order(pred[both])]:
        if label not in labels:
            labels.append(label)
    return y_true, y_pred, labels


def confusion_matrix(
    adata: AnnData | MuData,
    true_key: str,
    pred_key: str = "scmulan_fine",
    *,
    normalize: bool = True,
    order: Sequence[str] | None = None,
    mod: str = "rna",
) -> pd.DataFrame:
    """Confusion matrix of the reference labels against the predicted ones.

    Cells missing either label are left out. Rows and columns both run over the union of the labels
    present in the two columns, so the matrix is square and its diagonal holds the agreements.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality ``mod`` holds both columns.
    true_key
        Column of ``obs`` with the reference labels.
    pred_key
        Column of ``obs`` with the predictions, e.g. ``"scmulan_fine"`` or ``"scmulan_coarse"`` from
        :func:`scmulan.tl.annotate`.
    normalize
        Divide each row by its number of cells, giving the fraction of each reference label predicted as each
        label (rows sum to 1). A label that is only predicted has no reference cells; its row is then NaN.
    order
        Labels to put first, in this order; the others follow.
    mod
        MuData modality; ignored for AnnData input.

    Returns
    -------
    A :class:`~pandas.DataFrame` with the reference labels as index (named ``true_key``) and the predicted
    labels as columns (named ``pred_key``): cell counts, or row fractions with ``normalize=True``.

    Examples
    --------
    >>> scmulan.pl.confusion_matrix(adata, "cell_type", "scmulan_fine")  # doctest: +SKIP
    """
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    adata = get_modality(adata, mod)
    y_true, y_pred, labels = _paired_labels(adata, true_key, pred_key, order)
    counts = sk_confusion_matrix(y_true, y_pred, labels=labels)
    index = pd.Index(labels, name=true_key)
    columns = pd.Index(labels, name=pred_key)
    if not normalize:
        return pd.DataFrame(counts, index=index, columns=columns)
    totals = counts.sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(totals > 0, counts / totals, np.nan)
    return pd.DataFrame(fractions, index=index, columns=columns)
