"""The seed's objective: likelihood of the entities not yet seen, plus regression of their values.

For a sentence ``e_1..e_n`` and each position ``t`` whose next position is a target (``groups[t + 1] > 0``), the
entity head is trained with a per-entity sigmoid (binary cross-entropy summed over the whole vocabulary) against
the multi-hot set of the entities still to come in the current target group: all remaining genes of a generation
sentence (an unordered set), or the one next label of an ordered label segment (coarse type, then fine type, then
``<E>``). The value head regresses, at the same positions, the levels of the remaining genes (mean squared error on
the gene entries of the target set only).

By default each position's positive terms are averaged (``positives="mean"``): a generation position with ``R``
remaining genes would otherwise weigh ``R`` times an annotation position, and the generation task (hundreds of
remaining genes) would drown annotation and metadata prediction. Weighting the positives by ``1 / R`` shifts the
optimal log-odds of every candidate at that position by the same ``-log R``, so the softmax over candidates used
for sampling is unchanged. ``positives="sum"`` is the original's plain multi-hot BCE.

The multi-hot target is never materialised as a ``(B, T, V)`` tensor: with ``BCE(x, y) = softplus(x) - x * y``, the
sum over the vocabulary is ``sum_v softplus(x_v)`` minus the logits gathered at the target entities, and the
target entities at ``t`` are the later positions ``s > t`` of the same group, so a ``(B, T, T)`` gather serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ObjectiveOutput:
    """Losses of one batch.

    Attributes
    ----------
    loss
        ``entity_weight * entity + value_weight * value``.
    entity
        Entity loss: per sentence, the mean over its target positions of the BCE summed over the vocabulary; then
        the mean over sentences.
    value
        Value loss: per sentence, the mean squared error over (position, remaining gene) pairs; then the mean over
        sentences that have gene targets (0 when none has).
    per_sentence_entity, per_sentence_value
        ``(B,)`` the per-sentence terms (for per-task logging); NaN where a sentence has no term.
    hits
        ``(B,)`` fraction of target positions whose top-scoring entity is in the target set (the accuracy of
        label segments; the hit rate of next-gene guesses in generation sentences).
    """

    loss: Tensor
    entity: Tensor
    value: Tensor
    per_sentence_entity: Tensor
    per_sentence_value: Tensor
    hits: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)


def remaining_set_mask(groups: Tensor) -> tuple[Tensor, Tensor]:
    """Target structure of a right-padded batch.

    Parameters
    ----------
    groups
        ``(B, T)`` target groups (0 for prompt and padding positions).

    Returns
    -------
    ``positions`` ``(B, T - 1)``: True where position ``t`` is trained (``groups[:, t + 1] > 0``), and ``targets``
    ``(B, T - 1, T)``: True where the entity at position ``s`` belongs to the target set of position ``t``
    (``s > t`` and ``groups[s] == groups[t + 1]``).
    """
    groups = groups.long()
    T = groups.shape[1]
    nxt = groups[:, 1:]  # (B, T-1): group of the next position
    positions = nxt > 0
    t = torch.arange(T - 1, device=groups.device)[:, None]
    s = torch.arange(T, device=groups.device)[None, :]
    later = s > t  # (T-1, T)
    targets = later[None] & (groups[:, None, :] == nxt[:, :, None]) & positions[:, :, None]
    return positions, targets


def set_objective(
    entity_logits: Tensor,
    values: Tensor,
    ids: Tensor,
    levels: Tensor,
    groups: Tensor,
    *,
    entity_weight: float = 1.0,
    value_weight: float = 1.0,
    positives: str = "mean",
) -> ObjectiveOutput:
    """The multi-hot set objective for a right-padded batch.

    Parameters
    ----------
    entity_logits, values
        Head outputs ``(B, T, V)`` at every position.
    ids, levels
        The sentences ``(B, T)``.
    groups
        Target groups ``(B, T)`` (see :mod:`scmulan.sentence`).
    entity_weight, value_weight
        Weights of the two terms.
    positives
        ``"mean"``: average the positive (target) terms of each position; ``"sum"``: the plain multi-hot BCE.
    """
    if positives not in ("mean", "sum"):
        msg = f"`positives` must be 'mean' or 'sum', got {positives!r}."
        raise ValueError(msg)
    logits = entity_logits[:, :-1].float()  # (B, T-1, V): position t predicts the set after it
    vals = values[:, :-1].float()
    positions, targets = remaining_set_mask(groups)
    B, Tm1, _ = logits.shape
    index = ids[:, None, :].expand(B, Tm1, ids.shape[1])  # (B, T-1, T): entity at every position s
    target_logits = logits.gather(2, index)  # (B, T-1, T)
    # BCE(x, y) is softplus(x) for a negative and softplus(-x) for a positive: count every entity as a negative,
    # remove the targets from that sum, and add their positive terms (weighted 1/R with positives="mean").
    n_targets = targets.sum(-1)  # (B, T-1): R, the size of each position's target set
    as_negative = (F.softplus(target_logits) * targets).sum(-1)
    as_positive = (F.softplus(-target_logits) * targets).sum(-1)
    if positives == "mean":
        as_positive = as_positive / n_targets.clamp(min=1)
    bce = F.softplus(logits).sum(-1) - as_negative + as_positive  # (B, T-1)
    n_pos = positions.sum(1)
    has_pos = n_pos > 0
    per_entity = (bce * positions).sum(1) / n_pos.clamp(min=1)
    entity = per_entity[has_pos].mean() if bool(has_pos.any()) else logits.sum() * 0.0

    gene_targets = targets & (levels[:, None, :] > 0)  # only genes carry levels > 0
    err = (vals.gather(2, index) - levels[:, None, :].float()) ** 2
    n_gene = gene_targets.sum((1, 2))
    per_value = (err * gene_targets).sum((1, 2)) / n_gene.clamp(min=1)
    has_gene = n_gene > 0
    value = per_value[has_gene].mean() if bool(has_gene.any()) else vals.sum() * 0.0

    with torch.no_grad():
        top = logits.argmax(-1)  # (B, T-1)
        hit = ((ids[:, None, :] == top[:, :, None]) & targets).any(-1) & positions
        hits = hit.sum(1) / n_pos.clamp(min=1)
    nan = torch.full_like(per_entity, float("nan"))
    return ObjectiveOutput(
        loss=entity_weight * entity + value_weight * value,
        entity=entity,
        value=value,
        per_sentence_entity=torch.where(has_pos, per_entity, nan).detach(),
        per_sentence_value=torch.where(has_gene, per_value, nan).detach(),
        hits=torch.where(has_pos, hits, nan),
    )
