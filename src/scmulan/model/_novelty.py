"""Open-set score in the reference's expression space: the distance of a cell to its nearest reference cells.

A network trained on the reference types maps a cell of an unseen type onto the known type it resembles most, so a
distance in its annotation embedding cannot flag it (on PBMC, B cells left out of the reference land inside another
type's region: 5 % flagged). In gene space the same cells stay far from every reference cell. The score of a cell is
the mean Euclidean distance to its ``k`` nearest reference cells in a principal-component space of the reference's
most variable model genes (log-normalised expression, each gene centred and scaled to unit variance and clipped at
10, as ``scanpy.pp.scale`` + ``scanpy.pp.pca`` do), plus one more coordinate: the norm of the part of the cell's
scaled expression the components do not capture. An unseen type's own marker genes vary little in the reference, so
they lie outside its leading components; on 300 synthetic-atlas cells with one coarse type left out, that coordinate
raised the fraction of the left-out type flagged from 0.60 to 0.73 (mean of 6; no change on 1,200 cells: 0.81 and
0.83; ``benchmarks/annotation_open_set.py --parts synthetic``). The state kept with the model is small: the selected genes, their
means and scales, the loadings and the coordinates of at most a few thousand reference cells.

Cells are read a chunk of rows at a time from any :class:`~scmulan.sentence.CellSource`; only the selected genes of
one chunk are ever dense.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

ARRAYS = ("genes", "mean", "scale", "components", "reference")
CLIP = 10.0


@dataclass
class ExpressionSpace:
    """Principal components of the reference's variable model genes and the reference cells' coordinates.

    Attributes
    ----------
    genes
        ``(n_genes,)`` positions of the selected genes in the model's gene list (``vocab.genes``).
    mean, scale
        ``(n_genes,)`` their reference means and standard deviations.
    components
        ``(n_genes, n_components)`` loadings.
    reference
        ``(n_reference, n_components + 1)`` coordinates of the reference cells (see ``project``).
    k
        Nearest reference cells averaged by the score.
    """

    genes: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    reference: np.ndarray
    k: int

    def to_dict(self) -> dict:
        """Arrays and ``k`` (the arrays are saved in the model's safetensors file, ``k`` in ``model.json``)."""
        return {**{name: getattr(self, name) for name in ARRAYS}, "k": int(self.k)}

    @classmethod
    def from_dict(cls, d: dict) -> ExpressionSpace:
        """Inverse of ``to_dict``."""
        return cls(**{name: np.asarray(d[name]) for name in ARRAYS}, k=int(d["k"]))

    def project(self, x: np.ndarray) -> np.ndarray:
        """Coordinates of dense expression rows of the selected genes.

        The principal components, then the norm of the residual (the scaled expression minus its projection on the
        components).
        """
        z = np.clip((x - self.mean) / self.scale, -CLIP, CLIP)
        pcs = z @ self.components
        residual = np.linalg.norm(z - pcs @ self.components.T, axis=1)
        return np.concatenate([pcs, residual[:, None]], axis=1).astype(np.float32)

    def score(self, source, rows: np.ndarray | None = None, *, chunk_size: int = 2048) -> np.ndarray:
        """Mean distance of each cell of ``source`` to its ``k`` nearest reference cells (NaN: no model gene)."""
        rows = np.arange(source.n_obs) if rows is None else np.asarray(rows)
        out = np.empty(len(rows), dtype=np.float32)
        for start, x, expressed in _chunks(source, rows, self.genes, chunk_size):
            d = knn_distance(self.project(x), self.reference, self.k)
            out[start : start + len(x)] = np.where(expressed, d, np.nan)
        return out


def knn_distance(x: np.ndarray, reference: np.ndarray, k: int, *, chunk_size: int = 1024) -> np.ndarray:
    """Mean Euclidean distance of every row of ``x`` to its ``k`` nearest rows of ``reference`` (chunks of rows)."""
    x = np.asarray(x, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    k = min(k, len(reference))
    ref_sq = (reference**2).sum(1)
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk_size):
        block = x[start : start + chunk_size]
        d2 = (block**2).sum(1)[:, None] - 2 * block @ reference.T + ref_sq[None, :]
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]
        out[start : start + len(block)] = np.sqrt(np.maximum(nearest, 0.0)).mean(1)
    return out


def fit_expression_space(
    source,
    rows: np.ndarray,
    *,
    n_genes: int = 2000,
    n_components: int = 20,
    k: int = 10,
    seed: int = 0,
) -> ExpressionSpace:
    """Fit the principal-component space on reference cells and keep their coordinates.

    Parameters
    ----------
    source
        A :class:`~scmulan.sentence.CellSource` over the reference (log-normalised; its model genes are used).
    rows
        Reference cells (rows of ``source``) to fit on and keep; every one is kept, so subsample beforehand.
    n_genes
        Most variable model genes used.
    n_components
        Principal components.
    k
        Nearest reference cells averaged by the score.
    seed
        Seed of the randomised SVD.

    Returns
    -------
    The fitted :class:`ExpressionSpace`.
    """
    from sklearn.utils.extmath import randomized_svd

    rows = np.asarray(rows)
    if len(rows) < 2 * k:
        msg = f"The expression-space open-set score needs at least {2 * k} reference cells, got {len(rows)}."
        raise ValueError(msg)
    all_genes = np.arange(len(source.vocab.genes))
    # first pass: per-gene mean and variance of the reference, from sparse chunks
    total = np.zeros(len(all_genes))
    total_sq = np.zeros(len(all_genes))
    for _, x, _ in _chunks(source, rows, all_genes, 2048, dense=False):
        total += np.asarray(x.sum(0)).ravel()
        total_sq += np.asarray(x.multiply(x).sum(0)).ravel()
    mean = total / len(rows)
    var = total_sq / len(rows) - mean**2
    variable = np.flatnonzero(var > 1e-8)
    if len(variable) < 2:
        msg = "The reference cells express fewer than 2 of the model's genes variably; no expression-space score."
        raise ValueError(msg)
    genes = np.sort(variable[np.argsort(-var[variable], kind="stable")[:n_genes]])
    mean = mean[genes].astype(np.float32)
    scale = np.sqrt(var[genes] * len(rows) / (len(rows) - 1)).astype(np.float32)
    x = np.concatenate([x for _, x, _ in _chunks(source, rows, genes, 2048)])
    z = np.clip((x - mean) / scale, -CLIP, CLIP)
    n_components = int(min(n_components, len(genes) - 1, len(rows) - 1))
    _, _, vt = randomized_svd(z, n_components, random_state=seed)
    space = ExpressionSpace(genes.astype(np.int64), mean, scale, vt.T.astype(np.float32), np.zeros((0, 0)), k)
    space.reference = space.project(x)
    return space


def _chunks(
    source, rows: np.ndarray, genes: np.ndarray, chunk_size: int, *, dense: bool = True
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(start, expression of the selected model genes, whether the cell has a model gene)`` per chunk of rows.

    The columns follow ``genes`` (positions in ``source.vocab.genes``); a gene the data lack is 0. Dense with
    ``dense``, else CSR.
    """
    from scipy import sparse

    vocab = source.vocab
    gene_ids = np.asarray(vocab.gene_ids)
    position = np.full(int(gene_ids.max()) + 1, -1, dtype=np.int64)
    position[gene_ids] = np.arange(len(gene_ids))
    column = np.full(len(position), -1, dtype=np.int64)  # model-gene position -> output column
    column[gene_ids[genes]] = np.arange(len(genes))
    tokens = np.asarray(source.col_token)
    model_gene = (tokens >= 0) & (tokens < len(column))
    out_col = np.full(len(tokens), -1, dtype=np.int64)
    out_col[model_gene] = column[tokens[model_gene]]
    is_model_gene = np.zeros(len(tokens), dtype=bool)
    is_model_gene[model_gene] = position[tokens[model_gene]] >= 0
    keep = np.flatnonzero(out_col >= 0)
    select = sparse.csr_matrix(
        (np.ones(len(keep), dtype=np.float32), (keep, out_col[keep])), shape=(len(tokens), len(genes))
    )
    any_gene = sparse.csr_matrix(is_model_gene.astype(np.float32)[:, None])
    for start in range(0, len(rows), chunk_size):
        x, _ = source.read(rows[start : start + chunk_size])
        expressed = np.asarray((x @ any_gene).todense()).ravel() > 0
        picked = x @ select
        yield start, (picked.toarray() if dense else sparse.csr_matrix(picked)), expressed


def mahalanobis_score(embedding: np.ndarray, centroids: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``min_k (x - mu_k)^T P (x - mu_k)`` for every row ``x`` of ``embedding`` (NaN rows give NaN)."""
    x = np.asarray(embedding, dtype=np.float64)
    xp = x @ precision  # (n, d)
    mp = centroids @ precision  # (k, d)
    d2 = (xp * x).sum(1)[:, None] - 2 * xp @ centroids.T + (mp * centroids).sum(1)[None, :]
    return np.sqrt(np.maximum(d2.min(1), 0.0))


_ARRAY_PREFIX = "calibration.expression."


def split_arrays(calibration: dict | None) -> tuple[dict | None, dict[str, np.ndarray]]:
    """A calibration dict without its expression-space arrays (for ``model.json``) and those arrays (safetensors).

    Inverse: :func:`join_arrays`.
    """
    if calibration is None or calibration.get("expression") is None:
        return calibration, {}
    space = calibration["expression"]
    arrays = {_ARRAY_PREFIX + name: np.asarray(space[name]) for name in ARRAYS}
    plain = {k: v for k, v in space.items() if k not in ARRAYS}
    return {**calibration, "expression": plain}, arrays


def join_arrays(calibration: dict | None, extra: dict[str, np.ndarray]) -> dict | None:
    """A saved calibration dict with its expression-space arrays put back (saves without them are unchanged)."""
    if calibration is None or calibration.get("expression") is None:
        return calibration
    missing = [name for name in ARRAYS if _ARRAY_PREFIX + name not in extra]
    if missing:
        msg = (
            f"The saved calibration lacks its expression-space arrays {missing}; recalibrate the model with "
            "`model.calibrate(heldout_adata)` and save it again."
        )
        raise ValueError(msg)
    arrays = {name: extra[_ARRAY_PREFIX + name] for name in ARRAYS}
    return {**calibration, "expression": {**calibration["expression"], **arrays}}
