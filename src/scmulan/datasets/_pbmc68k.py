import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

logger = logging.getLogger(__name__)

COARSE_OF_BULK_LABEL = {
    "CD14+ Monocyte": "Monocyte",
    "CD19+ B": "B cell",
    "CD34+": "HSPC",
    "CD4+/CD25 T Reg": "T cell",
    "CD4+/CD45RA+/CD25- Naive T": "T cell",
    "CD4+/CD45RO+ Memory": "T cell",
    "CD56+ NK": "NK cell",
    "CD8+ Cytotoxic T": "T cell",
    "CD8+/CD45RA+ Naive Cytotoxic": "T cell",
    "Dendritic": "Dendritic cell",
}
TARGET_SUM = 1e4
# Largest accepted distance of a recovered count to the nearest integer (the bundled data reach about 0.08).
MAX_ROUNDING = 0.25


def counts_from_lognorm(
    lognorm: sparse.csr_matrix, total_counts: np.ndarray, *, target_sum: float = TARGET_SUM
) -> tuple[sparse.csr_matrix, float]:
    """Undo ``log1p(normalize_total(target_sum))``: ``round(expm1(x) * total_counts / target_sum)``.

    Parameters
    ----------
    lognorm
        Log-normalised values, cells x genes.
    total_counts
        The library size each cell was normalised by.
    target_sum
        The total each cell was normalised to.

    Returns
    -------
    The counts (CSR, float32) and the largest distance of an unrounded value to its integer.
    """
    lognorm = sparse.csr_matrix(lognorm)
    scale = np.repeat(np.asarray(total_counts, dtype=np.float64) / target_sum, np.diff(lognorm.indptr))
    values = np.expm1(lognorm.data.astype(np.float64)) * scale
    rounded = np.round(values)
    deviation = float(np.abs(values - rounded).max(initial=0.0))
    if deviation >= MAX_ROUNDING or (rounded < 0).any():
        msg = (
            f"The values are not log1p(counts / total_counts * {target_sum:g}): recovered counts are up to "
            f"{deviation:.3f} away from an integer (accepted: < {MAX_ROUNDING}). Check `total_counts` and "
            "`target_sum`, or that the data were not scaled."
        )
        raise ValueError(msg)
    counts = sparse.csr_matrix((rounded.astype(np.float32), lognorm.indices, lognorm.indptr), shape=lognorm.shape)
    counts.eliminate_zeros()
    return counts, deviation


def pbmc68k() -> AnnData:
    """700 peripheral blood mononuclear cells x 765 genes as raw counts, with scMulan metadata.

    Scanpy's bundled :func:`scanpy.datasets.pbmc68k_reduced` (a subsample of the 10x Genomics 68k PBMC data set
    (Zheng et al., Nat. Commun. 2017), no download needed) turned back into counts. Its ``.raw`` holds
    ``log1p(counts / n_counts * 1e4)`` for 765 genes, rounded to float32, so the counts are recovered as
    ``round(expm1(raw.X) * obs['n_counts'] / 1e4)``. The stored values carry three decimals, so before rounding
    the recovered counts lie up to about 0.08 from an integer: the counts re-normalise to ``raw.X`` within that
    precision, but a few large entries may differ by one from the original counts. ``obs['n_counts']`` is the library
    size over *all* genes of the original data, so it is larger than the row sums of this 765-gene matrix.

    Returns
    -------
    An AnnData with

    - ``X``: counts, CSR, float32; ``var_names``: the 765 gene symbols of ``pbmc68k_reduced().raw``;
    - ``obs``: the original columns (``bulk_labels``, ``n_genes``, ``percent_mito``, ``n_counts``, ``S_score``,
      ``G2M_score``, ``phase``, ``louvain``) plus the categoricals ``cell_type`` (the 10 bulk labels),
      ``coarse_cell_type`` (T cell, B cell, NK cell, Monocyte, Dendritic cell, HSPC), ``organ`` (``"Blood"``),
      ``region`` (``"Peripheral blood"``) and ``technology`` (``"10X"``);
    - ``uns['dataset']``: where the data come from and how they were recovered.

    The PCA, UMAP, neighbour graphs and scaled-data annotations of the original are dropped.

    Examples
    --------
    >>> import scmulan
    >>> adata = scmulan.datasets.pbmc68k()
    >>> adata.shape
    (700, 765)
    """
    import scanpy as sc  # slow import, only needed here

    reduced = sc.datasets.pbmc68k_reduced()
    counts, deviation = counts_from_lognorm(reduced.raw.X, reduced.obs["n_counts"].to_numpy())
    logger.info("recovered pbmc68k counts (largest rounding: %.3f)", deviation)

    obs = reduced.obs.copy()
    labels = obs["bulk_labels"].astype(str)
    unknown = sorted(set(labels) - set(COARSE_OF_BULK_LABEL))
    if unknown:  # pragma: no cover - guards against a change of the bundled data
        msg = f"pbmc68k_reduced has bulk labels without a coarse type: {unknown}; update COARSE_OF_BULK_LABEL."
        raise ValueError(msg)
    obs["cell_type"] = obs["bulk_labels"].copy()
    coarse_categories = list(dict.fromkeys(COARSE_OF_BULK_LABEL[c] for c in obs["cell_type"].cat.categories))
    obs["coarse_cell_type"] = pd.Categorical(labels.map(COARSE_OF_BULK_LABEL), categories=coarse_categories)
    for key, value in {"organ": "Blood", "region": "Peripheral blood", "technology": "10X"}.items():
        obs[key] = pd.Categorical([value] * len(obs))

    uns = {
        "dataset": {
            "name": "pbmc68k",
            "source": "scanpy.datasets.pbmc68k_reduced(): 10x Genomics 68k PBMCs (Zheng et al. 2017), subsampled",
            "recovery": "round(expm1(raw.X) * obs['n_counts'] / 1e4)",
            "max_rounding_deviation": deviation,
            "n_counts": "library size over all genes of the original data, not the sum of X",
        }
    }
    return AnnData(X=counts, obs=obs, var=reduced.raw.var.copy(), uns=uns)
