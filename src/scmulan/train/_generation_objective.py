"""The next-entity generation objective (``generation_objective="next"``): a proper joint distribution of a cell.

A generation sentence lists the cell's genes from the most to the least expressed (ties in random order), then
``<E>``. At every position ``t`` of its gene segment the network is trained to predict the entity at ``t + 1``:

- the **entity** term is a softmax cross-entropy over the vocabulary minus the genes already emitted in this
  sentence's gene segment (those can never come next), so the probability of ``<E>`` after the last expressed gene
  is learnt like any other next entity: the stop needs no ``gamma`` correction;
- the **level** term is a cross-entropy of the level head (levels 1..10, read from the hidden state at ``t`` and the
  embedding of the gene at ``t + 1``) against that gene's level.

By the chain rule the product of these conditionals is the likelihood of the whole cell (which genes, in which
order of expression, at which levels), unlike the seed's set objective whose per-entity sigmoids treat the remaining
genes as independent. Targets are looked up only within the sentence's own gene group (the genes at earlier
positions of the same group), as :func:`~scmulan.train._objective.remaining_set_mask` does, so packed rows holding
several sentences are handled. Positions not covered here (annotation and metadata labels) keep the set objective:
:func:`combine` merges both into one :class:`~scmulan.train._objective.ObjectiveOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from scmulan.train._objective import ObjectiveOutput

NEG_INF = float("-inf")


@dataclass
class NextOutput:
    """Per-sentence terms of :func:`next_entity_objective` for a batch of ``B`` rows.

    Attributes
    ----------
    per_sentence_entity
        ``(B,)`` mean next-entity cross-entropy over the row's generation positions (with gradient); NaN where none.
    per_sentence_value
        ``(B,)`` mean level cross-entropy over the row's generated genes (with gradient); NaN where none.
    hits
        ``(B,)`` fraction of generation positions whose arg-max entity is the true next one; NaN where none.
    positions
        ``(B, T - 1)`` True where position ``t`` is a generation position handled here.
    other_groups
        ``(B, T)`` the batch's target groups with the targets handled here set to 0: pass them to
        :func:`~scmulan.train.set_objective` for the remaining (label) positions.
    """

    per_sentence_entity: Tensor
    per_sentence_value: Tensor
    hits: Tensor
    positions: Tensor
    other_groups: Tensor


def generation_positions(levels: Tensor, groups: Tensor) -> Tensor:
    """``(B, T - 1)``: True where position ``t`` predicts a generated gene or the ``<E>`` right after one.

    Generated genes are the target positions (``groups > 0``) carrying a level (> 0): labels and ``<E>`` have level
    0, and genes of a prompt belong to no target group.
    """
    gene_target = (groups > 0) & (levels > 0)  # (B, T)
    nxt = groups[:, 1:] > 0
    return nxt & (gene_target[:, 1:] | gene_target[:, :-1])


def heads_with_levels(net: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Entity logits and values ``(B, T, V)`` and level logits ``(B, T - 1, L)`` in the batch's padded layout.

    As :func:`~scmulan.sentence.forward_heads` (packed rows when the batch has them), plus the level head at the
    generation positions (:func:`generation_positions`; zeros elsewhere) for the entity that follows each.
    """
    ids, levels = batch["ids"], batch["levels"]
    B, T = ids.shape
    if "packed_ids" not in batch:
        hidden = net(ids, levels)  # right-padded: plain causal attention
    else:
        packed = net(batch["packed_ids"], batch["packed_levels"], document=batch["packed_document"])
        real = packed.reshape(-1, packed.shape[-1]).index_select(0, batch["packed_source"])  # (N, C)
        hidden = real.new_zeros(B * T, real.shape[-1]).index_copy(0, batch["packed_target"], real).view(B, T, -1)
    entity_logits, values = net.heads(hidden)
    at = generation_positions(levels.long(), batch["groups"].long())  # (B, T-1)
    chosen = net.level_logits(hidden[:, :-1][at], ids[:, 1:][at])  # (N, L)
    level_logits = chosen.new_zeros(B, T - 1, chosen.shape[-1]).masked_scatter(at[..., None], chosen)
    return entity_logits, values, level_logits


def next_entity_objective(
    entity_logits: Tensor, level_logits: Tensor, ids: Tensor, levels: Tensor, groups: Tensor
) -> NextOutput:
    """Next-entity and level cross-entropies of the generation sentences of a right-padded batch.

    Parameters
    ----------
    entity_logits
        Entity head outputs ``(B, T, V)`` at every position.
    level_logits
        Level head outputs ``(B, T - 1, L)`` at positions ``0..T-2`` for the entity at the next position
        (``net.level_logits(hidden[:, :-1], ids[:, 1:])``); column ``k - 1`` is level ``k``.
    ids, levels
        The sentences ``(B, T)``.
    groups
        Target groups ``(B, T)`` (see :mod:`scmulan.sentence`).

    Returns
    -------
    The per-sentence terms, the positions they cover and the groups left to the set objective.
    """
    ids, levels, groups = ids.long(), levels.long(), groups.long()
    B, T = ids.shape
    V = entity_logits.shape[-1]
    positions = generation_positions(levels, groups)  # (B, T-1)
    b, t = positions.nonzero(as_tuple=True)  # N generation positions
    n_pos = positions.sum(1)
    nan = entity_logits.new_full((B,), float("nan"), dtype=torch.float32)
    other_groups = groups.clone()
    other_groups[:, 1:] = other_groups[:, 1:].masked_fill(positions, 0)
    if len(b) == 0:
        zero = entity_logits.sum() * 0.0 + level_logits.sum() * 0.0
        return NextOutput(nan + zero, nan + zero, nan, positions, other_groups)

    target = ids[b, t + 1]  # (N,)
    target_is_gene = levels[b, t + 1] > 0
    # The gene group of the sentence at t: that of the next gene, or, before <E>, that of the gene at t.
    own_group = torch.where(target_is_gene, groups[b, t + 1], groups[b, t])  # (N,)
    s = torch.arange(T, device=ids.device)
    emitted = (s[None] <= t[:, None]) & (groups[b] == own_group[:, None]) & (levels[b] > 0)  # (N, T)
    # Ban the emitted genes: scatter into one spare column where nothing is banned, so duplicates never conflict.
    column = torch.where(emitted, ids[b], V)
    banned = torch.zeros(len(b), V + 1, dtype=torch.bool, device=ids.device)
    banned.scatter_(1, column, True)
    logits = entity_logits[b, t].float().masked_fill(banned[:, :V], NEG_INF)  # (N, V)
    ce = torch.logsumexp(logits, -1) - logits.gather(1, target[:, None]).squeeze(1)  # (N,)
    per_entity = torch.zeros(B, device=ids.device).index_add(0, b, ce) / n_pos.clamp(min=1)

    lv = level_logits[b, t].float()  # (N, L)
    level_ce = F.cross_entropy(lv, (levels[b, t + 1] - 1).clamp(min=0, max=lv.shape[-1] - 1), reduction="none")
    level_ce = level_ce * target_is_gene
    n_gene = torch.zeros(B, device=ids.device).index_add(0, b, target_is_gene.float())
    per_value = torch.zeros(B, device=ids.device).index_add(0, b, level_ce) / n_gene.clamp(min=1)

    with torch.no_grad():
        hit = (logits.argmax(-1) == target).float()
        hits = torch.zeros(B, device=ids.device).index_add(0, b, hit) / n_pos.clamp(min=1)
    has_pos = n_pos > 0
    return NextOutput(
        per_sentence_entity=torch.where(has_pos, per_entity, nan),
        per_sentence_value=torch.where(n_gene > 0, per_value, nan),
        hits=torch.where(has_pos, hits, nan),
        positions=positions,
        other_groups=other_groups,
    )


def combine(
    set_out: ObjectiveOutput,
    nxt: NextOutput,
    *,
    entity_weight: float = 1.0,
    value_weight: float = 1.0,
    sentence_weight: Tensor | None = None,
) -> ObjectiveOutput:
    """One :class:`ObjectiveOutput`: the set objective's label positions and the generation positions.

    Each term is a (weighted) mean over sentences, as in :func:`~scmulan.train.set_objective` with the same
    ``sentence_weight``: a sentence's generation term and its label term count as one sentence each.
    """
    w = sentence_weight.float() if sentence_weight is not None else torch.ones_like(nxt.per_sentence_entity)

    def merge(set_mean: Tensor, set_rows: Tensor, mine: Tensor) -> Tensor:
        w_set = (w * ~torch.isnan(set_rows)).sum()
        have = ~torch.isnan(mine)
        total = w_set + (w * have).sum()
        mine_sum = torch.where(have, mine, 0.0).mul(w).sum()
        if float(total) <= 0:
            return set_mean * 0.0 + mine_sum * 0.0
        return (set_mean * w_set + mine_sum) / total

    entity = merge(set_out.entity, set_out.per_sentence_entity, nxt.per_sentence_entity)
    value = merge(set_out.value, set_out.per_sentence_value, nxt.per_sentence_value)
    gen = ~torch.isnan(nxt.per_sentence_entity)
    return ObjectiveOutput(
        loss=entity_weight * entity + value_weight * value,
        entity=entity,
        value=value,
        per_sentence_entity=torch.where(gen, nxt.per_sentence_entity.detach(), set_out.per_sentence_entity),
        per_sentence_value=torch.where(
            ~torch.isnan(nxt.per_sentence_value), nxt.per_sentence_value.detach(), set_out.per_sentence_value
        ),
        hits=torch.where(gen, nxt.hits, set_out.hits),
        extra={**set_out.extra, "generation_level": nxt.per_sentence_value.detach()},
    )
