"""Teacher-forced label predictions and their macro-F1 per metadata field, accumulated over a validation epoch.

At every position of a sentence whose next entity is a metadata label (the coarse then the fine type of an
annotation sentence), the prediction is the arg-max of the entity logits among that label's field's categories:
the decision constrained decoding takes at that step when the earlier labels are the true ones (teacher forcing).
The macro-F1 of a field is computed from per-entity counts of true positives, false positives and false negatives
summed over the epoch, as :func:`sklearn.metrics.f1_score` with ``average="macro"`` does: the mean of
``2 tp / (2 tp + fp + fn)`` over the categories of the field that occur among the targets or the predictions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from scmulan.train._objective import LabelTargets


def label_predictions(
    entity_logits: Tensor, ids: Tensor, groups: Tensor, labels: LabelTargets, rows: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Targets and teacher-forced predictions at the label positions of a right-padded batch.

    Parameters
    ----------
    entity_logits
        ``(B, T, V)`` entity logits at every position.
    ids, groups
        The sentences ``(B, T)`` and their target groups (0 for prompt and padding positions).
    labels
        Metadata fields and their categories (``labels.tau`` is not applied: the decision is the decoder's).
    rows
        ``(B,)`` bool: the sentences to read (e.g. the annotation sentences); ``None``: all.

    Returns
    -------
    ``(N,)`` target label ids and ``(N,)`` predicted label ids (each among its target's field's categories).
    """
    nxt = ids[:, 1:]
    at = (groups[:, 1:] > 0) & (labels.field_of[nxt] >= 0)  # (B, T-1): position t is followed by a label
    if rows is not None:
        at = at & rows[:, None]
    targets = nxt[at]
    logits = entity_logits[:, :-1][at]  # (N, V)
    candidates = labels.members[labels.field_of[targets]]
    predictions = logits.masked_fill(~candidates, float("-inf")).argmax(-1)
    return targets, predictions


def confusion_counts(targets: Tensor, predictions: Tensor, size: int) -> Tensor:
    """Per-entity true positives, false positives and false negatives, ``(3, size)`` int64.

    Parameters
    ----------
    targets, predictions
        ``(N,)`` entity ids.
    size
        Vocabulary size.
    """
    right = predictions == targets
    tp = torch.bincount(targets[right], minlength=size)
    fp = torch.bincount(predictions[~right], minlength=size)
    fn = torch.bincount(targets[~right], minlength=size)
    return torch.stack([tp, fp, fn])


def macro_f1(counts: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    """Macro-F1 of each field from summed :func:`confusion_counts`.

    Parameters
    ----------
    counts
        ``(3, V)`` true positives, false positives, false negatives per entity.
    members
        ``(F, V)`` bool: the categories of each field.

    Returns
    -------
    ``(F,)`` float macro-F1 (0 for a field none of whose categories occurred) and ``(F,)`` bool: whether any did.
    """
    tp, fp, fn = counts.double()
    occurred = (tp + fp + fn) > 0
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)  # (V,)
    used = members & occurred[None]  # (F, V)
    n = used.sum(1)
    per_field = (f1[None] * used).sum(1) / n.clamp(min=1)
    return per_field.float(), n > 0
