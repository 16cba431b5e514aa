"""How well confidences match correctness: reliability bins and the expected calibration error (ECE)."""

from __future__ import annotations

import numpy as np


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells, mean confidence and accuracy in ``n_bins`` equal-width confidence bins over ``[0, 1]``.

    Parameters
    ----------
    confidence
        Predicted probability that each label is right (NaN entries are ignored).
    correct
        Whether each label was right.
    n_bins
        Bins over ``[0, 1]``.

    Returns
    -------
    ``counts``, ``mean_confidence`` and ``accuracy``, each ``(n_bins,)`` (NaN in empty bins).
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    ok = ~np.isnan(confidence)
    confidence, correct = np.clip(confidence[ok], 0.0, 1.0), correct[ok]
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, confidence, n_bins) / counts
        accuracy = np.bincount(bins, correct, n_bins) / counts
    return counts, mean_conf, accuracy


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error: the cell-weighted mean of ``|accuracy - mean confidence|`` over equal-width bins.

    Parameters
    ----------
    confidence
        Predicted probability that each label is right, in ``[0, 1]`` (NaN entries are ignored).
    correct
        Whether each label was right.
    n_bins
        Bins over ``[0, 1]`` (see ``reliability_bins``).

    Returns
    -------
    ECE in ``[0, 1]`` (0: perfectly calibrated); NaN without any cell.
    """
    counts, mean_conf, accuracy = reliability_bins(confidence, correct, n_bins)
    if counts.sum() == 0:
        return float("nan")
    filled = counts > 0
    return float((counts[filled] * np.abs(accuracy[filled] - mean_conf[filled])).sum() / counts.sum())
