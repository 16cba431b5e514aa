"""Classifier two-sample test of generated against real cells (shared by ``pl.generated_vs_real`` and the demo)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData


def real_pca(real_x, generated_x, n_pcs: int) -> np.ndarray:
    """Real then generated cells in the PCA space fitted on the real cells only (new objects only).

    Parameters
    ----------
    real_x, generated_x
        Cells × shared genes (dense or CSR, float64), the same genes in the same order.
    n_pcs
        Principal components (fewer when there are few cells or genes).
    """
    import scanpy as sc
    from anndata import AnnData

    n_comps = min(n_pcs, real_x.shape[0] - 1, real_x.shape[1] - 1)
    if n_comps < 2:
        msg = f"Need at least 3 real cells and 3 shared genes for the joint UMAP, got {real_x.shape}."
        raise ValueError(msg)
    fit = AnnData(real_x.astype(np.float32))
    sc.pp.pca(fit, n_comps=n_comps, random_state=0)
    loadings = np.asarray(fit.varm["PCs"], dtype=np.float64)
    offset = np.asarray(real_x.mean(axis=0), dtype=np.float64).ravel() @ loadings
    return np.vstack([real_x @ loadings - offset, generated_x @ loadings - offset])


def c2st_auroc(real_pcs: np.ndarray, generated_pcs: np.ndarray, seed: int = 0) -> float:
    """Classifier two-sample test AUROC of real vs generated cells (0.5: indistinguishable, 1: fully separable).

    A logistic regression (standardised inputs) separating the two sets, 5-fold cross-validated, in the given
    coordinates (the real cells' PCA space); NaN with fewer than 2 cells in either set.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.vstack([real_pcs, generated_pcs])
    y = np.r_[np.zeros(len(real_pcs)), np.ones(len(generated_pcs))]
    n_splits = int(min(5, len(real_pcs), len(generated_pcs)))
    if n_splits < 2:
        return float("nan")
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return float(roc_auc_score(y, cross_val_predict(clf, X, y, cv=folds, method="predict_proba")[:, 1]))


def generation_c2st(real: AnnData, generated: AnnData, *, layer: str | None = None, n_pcs: int = 30) -> float:
    """The C2ST AUROC that :func:`scmulan.pl.generated_vs_real` prints, without the figure.

    Over the genes both objects share (``var_names``), in the PCA of the real cells.
    """
    genes = real.var_names.intersection(generated.var_names, sort=False)

    def matrix(adata: AnnData):
        m = adata.X if layer is None else adata.layers[layer]
        m = m[:, adata.var_names.get_indexer(genes)]
        return sparse.csr_matrix(m, dtype=np.float64) if sparse.issparse(m) else np.asarray(m, np.float64)

    pcs = real_pca(matrix(real), matrix(generated), n_pcs)
    return c2st_auroc(pcs[: real.n_obs], pcs[real.n_obs :])
