"""Calibrated annotation confidence and open-set detection, fitted on held-out reference cells.

Two things a softmax over cell types cannot say by itself, both learnt after training from labelled cells the
network did not train on:

- **Calibrated confidence.** The decoded path probability of a cell is mapped through a monotone fit of "was the
  label right" on held-out cells (Platt scaling in logit space: two parameters, so a few dozen held-out cells
  suffice), so that among cells with confidence 0.8 about 80 % are right. Being monotone, it never changes which
  cell is more confident than which; the labels are unchanged.
- **Open set.** A query cell unlike every reference type should not get one of them with confidence 0.99. Each cell
  is scored by its mean distance to its nearest reference cells in the reference's expression space (principal
  components of the variable model genes; ``scmulan.model._novelty``): the network maps a cell of an unseen type
  onto the known type it resembles, so a distance in its annotation embedding flags few of them (on PBMC without B
  cells: 5 % of the B cells, against 100 % in expression space; benchmarks/README.md). The threshold is the
  ``quantile`` of the held-out reference cells' scores, so about ``1 - quantile`` of cells of known types are flagged
  by construction; a cell above it is labelled ``"Unknown"``. Calibrations saved before this score keep theirs: the
  smallest Mahalanobis distance of the annotation embedding to the reference types' centroids (one covariance shared
  by the types, shrunk towards its mean variance; Lee et al., NeurIPS 2018).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from scmulan.model._novelty import mahalanobis_score
from scmulan.model._reliability import expected_calibration_error

UNKNOWN = "Unknown"


@dataclass
class Calibration:
    """What ``fit_calibration`` learnt; JSON-serialisable through ``to_dict`` / ``from_dict``.

    Attributes
    ----------
    confidence_knots, confidence_values
        The monotone map of the path confidence (the probability that the fine label is right), tabulated.
    coarse_knots, coarse_values
        The same for the coarse confidence (the probability that the coarse label is right).
    classes
        Reference fine types whose centroids the open-set score uses.
    centroids
        ``(n_classes, width)`` their mean annotation embeddings.
    precision
        ``(width, width)`` inverse of the shared, shrunk covariance.
    threshold
        Open-set score above which a cell is ``"Unknown"``.
    quantile
        The held-out quantile that set ``threshold``.
    n_heldout
        Held-out cells the fit used.
    ece_before, ece_after
        Expected calibration error of the path confidence on the held-out cells, before and after the map (the
        latter is in-sample: an optimistic figure; the benchmarks measure it on other cells).
    open_set_method
        What ``threshold`` applies to: ``"expression_knn"`` (mean distance to the nearest reference cells in the
        reference's expression space, ``expression``) or ``"mahalanobis"`` (annotation embedding; older saves).
    expression
        ``scmulan.model._novelty.ExpressionSpace.to_dict()`` of the reference (arrays), or ``None``.
    """

    confidence_knots: list[float]
    confidence_values: list[float]
    coarse_knots: list[float]
    coarse_values: list[float]
    classes: list[str]
    centroids: list[list[float]]
    precision: list[list[float]]
    threshold: float
    quantile: float
    n_heldout: int
    ece_before: float
    ece_after: float
    open_set_method: str = "mahalanobis"
    expression: dict | None = None

    def to_dict(self) -> dict:
        """Plain lists and numbers, plus the expression space's arrays (see ``split_arrays`` for saving)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Inverse of ``to_dict``."""
        return cls(**d)

    def confidence(self, p: np.ndarray) -> np.ndarray:
        """Calibrated path confidence of raw path probabilities ``p`` (NaN stays NaN)."""
        return _apply(self.confidence_knots, self.confidence_values, p)

    def coarse_confidence(self, p: np.ndarray) -> np.ndarray:
        """Calibrated coarse confidence of raw coarse probabilities ``p``."""
        return _apply(self.coarse_knots, self.coarse_values, p)

    def mahalanobis(self, embedding: np.ndarray) -> np.ndarray:
        """Smallest Mahalanobis distance of each row of ``embedding`` to a reference type's centroid."""
        return mahalanobis_score(embedding, np.asarray(self.centroids), np.asarray(self.precision))

    def score(self, embedding: np.ndarray, source=None) -> np.ndarray:
        """The open-set score of every cell (NaN: no model gene), compared with ``threshold``.

        Parameters
        ----------
        embedding
            ``(n_cells, width)`` annotation embeddings (NaN rows: cells without a model gene).
        source
            The cells' :class:`~scmulan.sentence.CellSource` (read for the expression-space score).
        """
        embedding = np.asarray(embedding)
        if self.open_set_method == "expression_knn":
            from scmulan.model._novelty import ExpressionSpace

            if source is None:
                msg = "The expression-space open-set score reads the cells' expression: pass their `source`."
                raise ValueError(msg)
            return ExpressionSpace.from_dict(self.expression).score(source)
        score = self.mahalanobis(np.nan_to_num(embedding)).astype(np.float32)
        score[np.isnan(embedding).any(1)] = np.nan
        return score


def _apply(knots: list[float], values: list[float], p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    out = np.interp(np.nan_to_num(p), np.asarray(knots), np.asarray(values))
    return np.where(np.isnan(p), np.nan, out).astype(np.float32)


def _platt(score: np.ndarray, correct: np.ndarray) -> tuple[list[float], list[float]]:
    """Platt scaling in logit space, ``sigmoid(a * logit(p) + b)`` with ``a >= 0``, tabulated on a grid of ``p``.

    Two parameters fitted by logistic regression: unlike an isotonic fit, it does not over-fit the few dozen
    held-out cells a small reference leaves (the isotonic map's in-sample ECE is 0 by construction, and its
    held-out ECE was worse in the benchmark). The map is kept as knots for :func:`numpy.interp`.
    """
    from scipy.special import expit
    from sklearn.linear_model import LogisticRegression

    eps = 1e-4
    p = np.clip(np.asarray(score, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(correct, dtype=bool)
    grid = np.linspace(0.0, 1.0, 201)
    if y.all() or not y.any():  # one class only: the held-out accuracy is the best constant
        return [float(g) for g in grid], [float(y.mean())] * len(grid)
    x = np.log(p / (1 - p))[:, None]
    fit = LogisticRegression(C=1e4).fit(x, y)
    a, b = max(float(fit.coef_[0, 0]), 0.0), float(fit.intercept_[0])
    g = np.clip(grid, eps, 1 - eps)
    values = expit(a * np.log(g / (1 - g)) + b)  # no overflow warning for confident, steep fits
    return [float(v) for v in grid], [float(v) for v in values]


def fit_calibration(
    reference_embedding: np.ndarray,
    reference_labels: np.ndarray,
    heldout_embedding: np.ndarray,
    heldout_confidence: np.ndarray,
    heldout_correct: np.ndarray,
    heldout_coarse_confidence: np.ndarray,
    heldout_coarse_correct: np.ndarray,
    *,
    quantile: float = 0.95,
    shrinkage: float = 0.1,
    expression=None,
    heldout_expression_score: np.ndarray | None = None,
) -> Calibration:
    """Fit the confidence maps and the open-set threshold.

    Parameters
    ----------
    reference_embedding, reference_labels
        Annotation embeddings and fine labels of training cells (the types' centroids and shared covariance).
    heldout_embedding
        Annotation embeddings of labelled cells the network did not train on (sets the open-set threshold).
    heldout_confidence, heldout_correct
        Their path confidences and whether the fine label was right.
    heldout_coarse_confidence, heldout_coarse_correct
        Their coarse confidences and whether the coarse label was right.
    quantile
        Fraction of held-out cells below the open-set threshold.
    shrinkage
        Weight of the mean variance on the covariance's diagonal (keeps it invertible with few cells per type).
    expression, heldout_expression_score
        The reference's ``scmulan.model._novelty.ExpressionSpace`` and the held-out cells' scores in it: the
        open-set threshold then applies to that score (``open_set_method="expression_knn"``); without them, to
        the Mahalanobis distance of the annotation embedding.
    """
    if not 0.5 <= quantile < 1.0:
        msg = f"`quantile` must be in [0.5, 1), got {quantile}."
        raise ValueError(msg)
    labels = np.asarray(reference_labels, dtype=object)
    emb = np.asarray(reference_embedding, dtype=np.float64)
    ok = ~np.isnan(emb).any(1) & (labels != None)  # noqa: E711 (element-wise)
    emb, labels = emb[ok], labels[ok].astype(str)
    classes, code = np.unique(labels, return_inverse=True)
    centroids = np.stack([emb[code == k].mean(0) for k in range(len(classes))])
    centred = emb - centroids[code]
    cov = centred.T @ centred / max(1, len(emb) - len(classes))
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    precision = np.linalg.pinv(cov)

    held = np.asarray(heldout_embedding, dtype=np.float64)
    conf = np.asarray(heldout_confidence, dtype=np.float64)
    keep = ~np.isnan(held).any(1) & ~np.isnan(conf)
    if keep.sum() < 10:
        msg = f"Calibration needs at least 10 labelled held-out cells with expressed genes, got {int(keep.sum())}."
        raise ValueError(msg)
    method = "mahalanobis"
    scores = mahalanobis_score(held[keep], centroids, precision)
    if expression is not None:
        if heldout_expression_score is None:
            msg = "`expression` needs `heldout_expression_score` (the held-out cells' scores in that space)."
            raise ValueError(msg)
        method = "expression_knn"
        scores = np.asarray(heldout_expression_score, dtype=np.float64)[keep]
    correct = np.asarray(heldout_correct, dtype=bool)[keep]
    knots, values = _platt(conf[keep], correct)
    c_knots, c_values = _platt(
        np.asarray(heldout_coarse_confidence, dtype=np.float64)[keep], np.asarray(heldout_coarse_correct)[keep]
    )
    calibrated = np.interp(conf[keep], knots, values)
    return Calibration(
        confidence_knots=knots,
        confidence_values=values,
        coarse_knots=c_knots,
        coarse_values=c_values,
        classes=[str(c) for c in classes],
        centroids=centroids.tolist(),
        precision=precision.tolist(),
        threshold=float(np.quantile(scores, quantile)),
        quantile=float(quantile),
        n_heldout=int(keep.sum()),
        ece_before=expected_calibration_error(conf[keep], correct),
        ece_after=expected_calibration_error(calibrated, correct),
        open_set_method=method,
        expression=None if expression is None else expression.to_dict(),
    )


def calibrate(
    model,
    adata=None,
    *,
    quantile: float = 0.95,
    max_reference_cells: int = 5000,
    batch_size: int = 64,
    device: str = "auto",
    seed: int = 0,
    open_set_method: str = "expression_knn",
) -> Calibration:
    """Calibrate annotation confidences and fit the open-set threshold on labelled held-out cells.

    ``train`` calls it with its validation cells (``train_size`` < 1); call it yourself with cells the model never
    trained on, e.g. after :meth:`~scmulan.SCMULAN.finetune` or for a model trained on all its cells. Afterwards
    :meth:`~scmulan.SCMULAN.annotate` reports calibrated confidences and can flag cells of unseen types
    (``open_set=True``). The result is saved with the model.

    Parameters
    ----------
    model
        A :class:`~scmulan.SCMULAN` trained on annotation, with its training data attached (the reference types'
        centroids come from its training cells).
    adata
        Held-out cells with the registered cell-type columns; ``None``: the model's validation cells.
    quantile
        Fraction of held-out cells of known types that stay below the open-set threshold (the rest are the
        expected false "Unknown" calls).
    max_reference_cells
        Training cells used for the reference types' centroids (a random subset of at most this many).
    batch_size, device
        Inference settings.
    seed
        Seed of the reference subset.
    open_set_method
        Score of ``open_set=True``: ``"expression_knn"``, the mean distance to the 10 nearest reference cells in
        the principal components of the reference's variable genes (the reference subset's coordinates are saved
        with the model), or ``"mahalanobis"``, the distance of the annotation embedding to the nearest reference
        type's centroid (flags few cells of unseen types: the network maps them onto a known type).

    Returns
    -------
    The fitted ``scmulan.model.Calibration`` (held-out ECE before and after, the threshold).
    """
    methods = ("expression_knn", "mahalanobis")
    if open_set_method not in methods:
        msg = f"`open_set_method` must be one of {methods}, got {open_set_method!r}."
        raise ValueError(msg)
    fields = model.annotation_fields
    if model.adata is None:
        msg = "Calibration needs the model's training data attached: `SCMULAN.load(path, adata=reference)`."
        raise ValueError(msg)
    columns = {f: model.obs_keys_.get(f) for f in fields}
    if adata is None:
        heldout_idx = getattr(model, "validation_indices_", None)
        if heldout_idx is None or len(heldout_idx) < 10:
            n = 0 if heldout_idx is None else len(heldout_idx)
            msg = (
                f"The model has {n} validation cells; calibration needs at least 10 labelled cells it did not train "
                "on: train with `train_size` < 1 (e.g. 0.9), or pass labelled held-out cells as `adata`."
            )
            raise ValueError(msg)
        heldout = model.adata[np.asarray(heldout_idx)]
    else:
        heldout = adata
    missing = [c for c in columns.values() if c is None or c not in heldout.obs]
    if missing or None in columns.values():
        msg = f"The held-out cells need the registered cell-type columns {list(columns.values())} in `obs`."
        raise ValueError(msg)
    train_idx = getattr(model, "train_indices_", None)  # None after loading: the attached reference
    train_idx = np.arange(model.adata.n_obs) if train_idx is None else np.asarray(train_idx)
    # a held-out cell among the reference cells would be its own nearest neighbour (a lower threshold)
    train_idx = train_idx[~model.adata.obs_names[train_idx].isin(heldout.obs_names)]
    rng = np.random.default_rng(seed)
    if len(train_idx) > max_reference_cells:
        train_idx = np.sort(rng.choice(train_idx, max_reference_cells, replace=False))
    reference = model.adata[train_idx]
    kw = {"batch_size": batch_size, "device": device, "progress": False, "return_embedding": True}
    held_frame, held_emb = model.annotate(heldout, calibrated=False, **kw)
    _, ref_emb = model.annotate(reference, calibrated=False, **kw)
    fine_field, coarse_field = fields[-1], fields[0]
    truth_fine = heldout.obs[columns[fine_field]].astype(object).to_numpy()
    truth_coarse = heldout.obs[columns[coarse_field]].astype(object).to_numpy()
    known = ~held_frame["fine"].isna().to_numpy() & ~_is_missing(truth_fine)
    correct = held_frame["fine"].astype(object).to_numpy() == truth_fine
    coarse_correct = held_frame["coarse"].astype(object).to_numpy() == truth_coarse
    space = held_score = None
    if open_set_method == "expression_knn":
        space, held_score = _expression_space(model, reference, heldout, seed)
        held_score = held_score[known]
    cal = fit_calibration(
        ref_emb,
        reference.obs[columns[fine_field]].astype(object).to_numpy(),
        held_emb[known],
        held_frame["confidence"].to_numpy()[known],
        correct[known],
        held_frame["coarse_confidence"].to_numpy()[known],
        coarse_correct[known],
        quantile=quantile,
        expression=space,
        heldout_expression_score=held_score,
    )
    model.calibration_ = cal.to_dict()
    return cal


def _expression_space(model, reference, heldout, seed: int):
    """The reference's expression space (``scmulan.model._novelty``) and the held-out cells' scores in it."""
    from scmulan.model._novelty import fit_expression_space
    from scmulan.model._query import query_source

    parts = model.parts()
    ref_source = query_source(parts, reference, context=False, where="calibrate")
    space = fit_expression_space(ref_source, np.arange(reference.n_obs), seed=seed)
    held_source = query_source(parts, heldout, context=False, where="calibrate")
    return space, space.score(held_source)


def calibrate_after_training(model, validation_indices: np.ndarray, accelerator: str) -> None:
    """Calibrate a model that just learnt annotation on its validation cells, when at least 10 are labelled."""
    import logging

    if len(validation_indices) < 10:
        return
    columns = [model.obs_keys_[f] for f in model.annotation_fields if f in model.obs_keys_]
    obs = model.adata.obs.iloc[validation_indices]
    labelled = obs[columns].notna().all(1).to_numpy() if columns else np.zeros(0, bool)
    if labelled.sum() < 10:
        return
    device = "cpu" if accelerator == "cpu" else "auto"
    logger = logging.getLogger(__name__)
    try:
        cal = calibrate(model, model.adata[validation_indices[labelled]], device=device)
    except ValueError as e:  # e.g. too few validation cells express a model gene
        logger.info("not calibrated: %s", e)
        return
    logger.info(
        "calibrated on %d validation cells: ECE %.3f -> %.3f, open-set threshold %.2f",
        cal.n_heldout,
        cal.ece_before,
        cal.ece_after,
        cal.threshold,
    )


def _is_missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.isna(values)


def apply_calibration(frame, embedding: np.ndarray, calibration: dict | None, *, open_set: bool, source=None):
    """Calibrated confidences (and ``"Unknown"`` labels with ``open_set``) for an annotation frame, in place.

    ``frame`` is what :meth:`scmulan.SCMULAN.annotate` builds; the raw path probability is kept as ``raw_confidence``.
    ``source`` (the annotated cells' :class:`~scmulan.sentence.CellSource`) is read for the expression-space score.
    """
    if calibration is None:
        if open_set:
            msg = (
                "`open_set=True` needs a calibrated model: train with validation cells (`train_size` < 1, the default "
                "0.9 calibrates at the end of training) or call `model.calibrate(heldout_adata)` first."
            )
            raise ValueError(msg)
        return frame
    cal = Calibration.from_dict(calibration)
    frame["raw_confidence"] = frame["confidence"].astype(np.float32)
    frame["confidence"] = cal.confidence(frame["confidence"].to_numpy())
    frame["coarse_confidence"] = cal.coarse_confidence(frame["coarse_confidence"].to_numpy())
    if open_set:
        score = cal.score(embedding, source)
        frame["open_set_score"] = score
        unknown = np.nan_to_num(score, nan=-np.inf) > cal.threshold
        for col in ("coarse", "fine"):
            labels = (
                frame[col].cat.add_categories([UNKNOWN]) if UNKNOWN not in frame[col].cat.categories else frame[col]
            )
            labels[unknown] = UNKNOWN
            frame[col] = labels
    return frame
