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

**Labels** (``labels=LabelTargets(...)``, scmulan's default for its own models): at a position whose next entity is a
metadata label (a coarse or fine cell type, an organ…), the BCE over the whole vocabulary is replaced by a softmax
cross-entropy over that field's own categories — exactly the distribution that constrained decoding reads (the
confidence of :func:`~scmulan.nn.greedy_decode` is that softmax). Optionally the logits are adjusted by
``tau * log(prior)`` of the training labels during training only (logit adjustment, Menon et al. 2021), which
trades majority-class accuracy for rare-class recall, and smoothed (``label_smoothing``).

The multi-hot target is never materialised as a ``(B, T, V)`` tensor: with ``BCE(x, y) = softplus(x) - x * y``, the
sum over the vocabulary is ``sum_v softplus(x_v)`` minus the logits gathered at the target entities, and the
target entities at ``t`` are the later positions ``s > t`` of the same group, so a ``(B, T, T)`` gather serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from scmulan.vocab import Vocabulary


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


@dataclass(frozen=True)
class LabelTargets:
    """Which entities are metadata labels, and how their positions are trained.

    Attributes
    ----------
    field_of
        ``(V,)`` int64: index of the metadata field of each entity (its primary field), ``-1`` for genes, specials and
        task tokens.
    members
        ``(F, V)`` bool: the categories of each field (the candidates of the softmax at a label position).
    log_prior
        ``(V,)`` log-frequency of each label among the training cells (0 where unknown), used with ``tau``.
    tau
        Logit adjustment strength (0: none).
    label_smoothing
        Label smoothing of the cross-entropy over the field's categories.
    fields
        Name of each field (the rows of ``members``), used in the names of the logged validation metrics
        (``validation_<field>_macro_f1``); empty: ``field0``, ``field1``...
    """

    field_of: Tensor
    members: Tensor
    log_prior: Tensor | None = None
    tau: float = 0.0
    label_smoothing: float = 0.0
    fields: tuple[str, ...] = ()

    @classmethod
    def from_vocabulary(
        cls,
        vocab: Vocabulary,
        label_ids: np.ndarray | None = None,
        *,
        tau: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> LabelTargets:
        """The label targets of every metadata field of ``vocab``.

        Parameters
        ----------
        vocab
            The model's vocabulary. An id shared by several fields (the original's ``Unclassified``) counts for the
            last of them.
        label_ids
            Label token ids of the training cells (any shape, ``-1`` for unknown): their frequencies within each
            field give ``log_prior``; ``None``: no prior.
        tau, label_smoothing
            See the attributes.
        """
        V = len(vocab)
        fields = vocab.metadata_fields
        field_of = np.full(V, -1, dtype=np.int64)
        members = np.zeros((max(1, len(fields)), V), dtype=bool)
        for k, f in enumerate(fields):
            ids = vocab.field_ids(f)
            field_of[ids] = k
            members[k, ids] = True
        log_prior = None
        if label_ids is not None:
            ids = np.asarray(label_ids).ravel()
            counts = np.bincount(ids[ids >= 0], minlength=V).astype(np.float64)
            per_field = np.zeros(len(members))
            np.add.at(per_field, field_of[field_of >= 0], counts[field_of >= 0])
            total = np.where(field_of >= 0, per_field[field_of.clip(min=0)], 1.0)
            # unseen categories get half a count, so the prior stays finite
            log_prior = np.where(field_of >= 0, np.log(np.maximum(counts, 0.5) / np.maximum(total, 1.0)), 0.0)
            log_prior = torch.from_numpy(log_prior.astype(np.float32))
        fields = tuple(fields)
        return cls(torch.from_numpy(field_of), torch.from_numpy(members), log_prior, tau, label_smoothing, fields)

    def to(self, device: torch.device) -> LabelTargets:
        """The same targets on ``device``."""
        prior = self.log_prior.to(device) if self.log_prior is not None else None
        return LabelTargets(
            self.field_of.to(device), self.members.to(device), prior, self.tau, self.label_smoothing, self.fields
        )

    def field_name(self, k: int) -> str:
        """Name of field ``k`` (``field<k>`` when the targets were built without names)."""
        return self.fields[k] if k < len(self.fields) else f"field{k}"


def label_cross_entropy(logits: Tensor, targets: Tensor, labels: LabelTargets) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy over each target's field, and whether the field's arg-max is the target.

    Parameters
    ----------
    logits
        ``(N, V)`` entity logits at ``N`` label positions.
    targets
        ``(N,)`` the label entity that follows each position.
    labels
        Fields and their categories.

    Returns
    -------
    ``(N,)`` losses and ``(N,)`` hits.
    """
    candidates = labels.members[labels.field_of[targets]]  # (N, V)
    if labels.tau and labels.log_prior is not None:
        logits = logits + labels.tau * labels.log_prior[None]
    masked = logits.masked_fill(~candidates, float("-inf"))
    log_p = masked.log_softmax(-1)
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)
    if labels.label_smoothing:
        n_cand = candidates.sum(-1).clamp(min=1)
        uniform = -(log_p.masked_fill(~candidates, 0.0)).sum(-1) / n_cand
        nll = (1 - labels.label_smoothing) * nll + labels.label_smoothing * uniform
    hits = masked.argmax(-1) == targets
    return nll, hits


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
    labels: LabelTargets | None = None,
    sentence_weight: Tensor | None = None,
) -> ObjectiveOutput:
    """The multi-hot set objective for a right-padded batch (with a softmax over categories at label positions).

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
    labels
        Metadata fields and their categories: positions followed by a label are trained with a softmax
        cross-entropy over that label's field instead of the BCE (see the module notes); ``None``: BCE everywhere,
        as the original.
    sentence_weight
        ``(B,)`` non-negative weight of each sentence in the batch averages of both terms (e.g. one unit per task
        present, shared by its sentences: see :func:`scmulan.train.task_balanced_weights`); ``None``: every sentence alike.
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
    label_hit = None
    if labels is not None:
        nxt = ids[:, 1:]
        at_label = positions & (labels.field_of[nxt] >= 0)  # (B, T-1)
        if bool(at_label.any()):
            ce, hit = label_cross_entropy(logits[at_label], nxt[at_label], labels)
            bce = bce.masked_scatter(at_label, ce)
            label_hit = (at_label, hit)
    n_pos = positions.sum(1)
    has_pos = n_pos > 0
    per_entity = (bce * positions).sum(1) / n_pos.clamp(min=1)
    w = sentence_weight.to(logits.dtype) if sentence_weight is not None else torch.ones_like(per_entity)
    entity = _weighted_mean(per_entity, w * has_pos) if bool(has_pos.any()) else logits.sum() * 0.0

    gene_targets = targets & (levels[:, None, :] > 0)  # only genes carry levels > 0
    err = (vals.gather(2, index) - levels[:, None, :].float()) ** 2
    n_gene = gene_targets.sum((1, 2))
    per_value = (err * gene_targets).sum((1, 2)) / n_gene.clamp(min=1)
    has_gene = n_gene > 0
    value = _weighted_mean(per_value, w * has_gene) if bool(has_gene.any()) else vals.sum() * 0.0

    with torch.no_grad():
        top = logits.argmax(-1)  # (B, T-1)
        hit = ((ids[:, None, :] == top[:, :, None]) & targets).any(-1) & positions
        if label_hit is not None:  # at label positions: the arg-max among the field's categories, as decoded
            hit = hit.masked_scatter(label_hit[0], label_hit[1])
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


def _weighted_mean(x: Tensor, w: Tensor) -> Tensor:
    """``sum(w * x) / sum(w)`` (0 when every weight is 0), without letting NaN/inf at zero weights through."""
    return torch.where(w > 0, x, 0.0).mul(w).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)


def task_balanced_weights(task: Tensor, task_weights: Tensor) -> Tensor:
    """Per-sentence weights giving every task present in a batch ``task_weights[task]`` in total.

    Without it a batch average weighs tasks by how many of their sentences the batch holds (and a task's long
    sentences by nothing); with it annotation keeps its share of the gradient however the tasks were sampled.

    Parameters
    ----------
    task
        ``(B,)`` task index of each sentence (in the order of ``scmulan.sentence.TASKS``).
    task_weights
        ``(n_tasks,)`` weight of each task's share.

    Returns
    -------
    ``(B,)`` weights: ``task_weights[task[b]] / (number of sentences of that task in the batch)``.
    """
    counts = torch.bincount(task.clamp(min=0), minlength=task_weights.shape[0]).to(task_weights.dtype)
    return task_weights[task] / counts[task].clamp(min=1)
