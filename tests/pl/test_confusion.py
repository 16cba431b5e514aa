import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mudata import MuData
from sklearn import metrics

import scmulan


def _oracle(adata, true_key, pred_key, labels):
    counts = metrics.confusion_matrix(
        adata.obs[true_key].astype(str), adata.obs[pred_key].astype(str), labels=labels
    ).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    out = np.full_like(counts, np.nan)
    np.divide(counts, totals, out=out, where=totals > 0)
    return out


def test_confusion_matrix_matches_sklearn(pbmc):
    matrix = scmulan.pl.confusion_matrix(pbmc, "bulk_labels", "scmulan_fine")
    assert isinstance(matrix, pd.DataFrame)
    assert list(matrix.index) == list(matrix.columns)
    assert matrix.index.name == "bulk_labels"
    assert matrix.columns.name == "scmulan_fine"
    labels = list(matrix.index)
    # union of the labels: every reference and every predicted label appears
    assert set(labels) == set(pbmc.obs["bulk_labels"].astype(str)) | set(pbmc.obs["scmulan_fine"].astype(str))
    np.testing.assert_allclose(matrix.to_numpy(), _oracle(pbmc, "bulk_labels", "scmulan_fine", labels))
    reference_rows = matrix.loc[pbmc.obs["bulk_labels"].astype(str).unique()]
    np.testing.assert_allclose(reference_rows.sum(axis=1), 1.0)
    assert matrix.loc["Platelet"].isna().all()  # only predicted: no reference cells


def test_confusion_matrix_counts_order_and_missing(pbmc):
    pbmc.obs.loc[pbmc.obs_names[:4], "bulk_labels"] = np.nan
    counts = scmulan.pl.confusion_matrix(
        pbmc, "bulk_labels", "scmulan_fine", normalize=False, order=["CD34+", "Dendritic"]
    )
    assert list(counts.index[:2]) == ["CD34+", "Dendritic"]
    assert counts.to_numpy().sum() == pbmc.n_obs - 4
    assert counts.to_numpy().dtype.kind == "i"


def test_confusion_matrix_mudata_and_errors(pbmc):
    mdata = MuData({"rna": pbmc})
    pd.testing.assert_frame_equal(
        scmulan.pl.confusion_matrix(mdata, "bulk_labels"), scmulan.pl.confusion_matrix(pbmc, "bulk_labels")
    )
    with pytest.raises(ValueError, match=r"obs\['cell_type'\]"):
        scmulan.pl.confusion_matrix(pbmc, "cell_type")
    with pytest.raises(ValueError, match=r"obs\['scmulan_tissue'\].*scmulan\.tl\.annotate"):
        scmulan.pl.confusion_matrix(pbmc, "bulk_labels", "scmulan_tissue")


def test_confusion_plot(pbmc, tmp_path):
    ax = scmulan.pl.confusion(pbmc, "bulk_labels", show=False)
    assert isinstance(ax, Axes)
    truth, pred = pbmc.obs["bulk_labels"].astype(str), pbmc.obs["scmulan_fine"].astype(str)
    accuracy = metrics.accuracy_score(truth, pred)
    macro_f1 = metrics.f1_score(truth, pred, average="macro")
    assert f"accuracy {accuracy:.3f}" in ax.get_title()
    assert f"macro-F1 {macro_f1:.3f}" in ax.get_title()
    n = len(scmulan.pl.confusion_matrix(pbmc, "bulk_labels"))
    assert len(ax.get_xticklabels()) == n
    assert len(ax.get_yticklabels()) == n

    fig = scmulan.pl.confusion(
        pbmc, "bulk_labels", "scmulan_coarse", normalize=False, annotate=False, return_fig=True, show=False
    )
    assert isinstance(fig, Figure)

    path = tmp_path / "out" / "confusion.png"
    scmulan.pl.confusion(pbmc, "bulk_labels", save=str(path), show=False)
    assert path.stat().st_size > 0
