"""Batched greedy decoding with a key/value cache (annotation, metadata); sampling is in :mod:`.sampling`.

Every routine takes a padded batch of prompts (right padding lets the prompt pass run plain causal attention; left
padding is supported with an explicit mask), runs **one** pass over the prompts that fills the cache, then
one cached step per new token for the whole batch. Everything inside a step is a tensor operation; nothing loops
over cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .model import CSentenceTransformer

NEG_INF = float("-inf")


@dataclass
class GreedyOutput:
    """Result of :func:`greedy_decode` for a batch of ``B`` prompts and ``S`` steps.

    Attributes
    ----------
    tokens
        Chosen entity ids ``(B, S)``.
    levels
        Their values ``(B, S)``: the value head at the chosen entity, rounded and clipped to ``0..n_levels-1``.
    probs
        Probability of each chosen entity under the softmax over the entities allowed at that step ``(B, S)``;
        ``0`` where nothing was allowed (see :func:`greedy_decode`).
    n_generated
        ``(B,)``: ``S``, or fewer when ``stop_at_end`` and ``<E>`` was chosen (the count includes that ``<E>``).
    hidden
        ``(B, S + 1, C)``: final hidden states at the last two prompt positions followed by those at the positions
        of the first ``S - 1`` generated tokens. ``hidden[:, 2]`` is the state at the first generated token (the
        annotation embedding); the original scMulan takes ``hidden[:, n_generated - 1]``.
    entity_logits, values
        Raw head outputs at every step ``(B, S, V)`` (before any masking), only with ``return_logits=True``.
    pooled
        ``(B, C)`` mean final hidden state over the prompt positions in ``pool_mask``, when given.
    marginal
        ``(B,)`` probability of the last chosen entity summed over every choice of the first step, from
        :func:`hierarchical_decode` only.
    """

    tokens: Tensor
    levels: Tensor
    probs: Tensor
    n_generated: Tensor
    hidden: Tensor
    entity_logits: Tensor | None = None
    values: Tensor | None = None
    pooled: Tensor | None = None
    marginal: Tensor | None = None


@torch.inference_mode()
def greedy_decode(
    net: CSentenceTransformer,
    ids: Tensor,
    levels: Tensor,
    attention_mask: Tensor | None,
    n_steps: int,
    *,
    allowed: list[Tensor | None] | None = None,
    banned: Tensor | None = None,
    ban_prompt: Literal["none", "all_but_last"] = "none",
    stop_at_end: bool = False,
    end_id: int = 0,
    return_logits: bool = False,
    pool_mask: Tensor | None = None,
    padding: Literal["left", "right"] = "left",
    logit_bias: Tensor | None = None,
) -> GreedyOutput:
    """Greedy decoding of ``n_steps`` tokens for a padded batch of prompts.

    At each step a cell takes the most likely entity that is neither ``banned``, nor outside ``allowed[step]``,
    nor (with ``ban_prompt``) already in its sequence. A cell for which these rules leave no entity at all gets
    ``end_id`` with probability ``0`` at that step (and, with ``stop_at_end``, counts as finished): the sentence
    ends, as :func:`sample_decode` ends a cell whose candidates ran out.

    Parameters
    ----------
    net
        The transformer.
    ids, levels, attention_mask
        Padded prompts ``(B, T)``; ``attention_mask`` True for real tokens (``None``: no padding).
    n_steps
        Number of tokens to decode.
    allowed
        Per step, a boolean ``(V,)`` mask of the entities that may be chosen, or ``None`` for no constraint
        (constrained annotation: coarse types at step 1, fine types at step 2).
    banned
        Boolean ``(V,)`` mask of entities never chosen (the original's ``ignore_Idx``).
    ban_prompt
        ``"all_but_last"`` reproduces the original scMulan: every entity already in the sequence is banned except
        the most recent one.
    stop_at_end
        Count a cell as finished once it chose ``<E>`` (``n_generated``); later steps are still computed but
        should be ignored by the caller.
    end_id
        Id of ``<E>``.
    return_logits
        Also return the raw head outputs of every step.
    pool_mask
        ``(B, T)`` prompt positions to average the final hidden state over (e.g. the gene positions).
    padding
        ``"right"`` (real tokens first) lets the prompt pass run plain causal attention (see
        :meth:`CSentenceTransformer.forward`); ``"left"`` uses an explicit mask.
    logit_bias
        ``(V,)`` added to the entity logits at every step before the choice (e.g. minus a label prior: post-hoc logit
        adjustment); the returned ``entity_logits`` are the raw head outputs, without it.
    """
    B, T = ids.shape
    V = net.config.vocab_size
    device = ids.device
    rows = torch.arange(B, device=device)
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.bool, device=device)
    cache = net.new_cache(capacity=T + n_steps)
    hidden = net(ids, levels, attention_mask, cache, padding=padding)  # (B, T, C)
    end = last_positions(attention_mask, padding)  # (B,): position of each prompt's last real token
    pooled = None
    if pool_mask is not None:
        weights = (pool_mask & attention_mask).to(hidden.dtype)[..., None]  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    states = [hidden[rows, (end - 1).clamp(min=0)], hidden[rows, end]]  # the last two prompt positions
    last = hidden[rows, end]

    counts = None
    if ban_prompt == "all_but_last":
        # How often each entity occurs in the sequence; the last position's entity is exempt once.
        counts = torch.zeros(B, V, dtype=torch.int32, device=device)
        counts.scatter_add_(1, ids, attention_mask.to(torch.int32))
        last_tok = ids[rows, end]
    static_ban = banned.to(device) if banned is not None else torch.zeros(V, dtype=torch.bool, device=device)
    # Steps restricted to a field's categories compute the head rows of those entities only (K of V columns).
    plain_heads = all(isinstance(getattr(h, "weight", None), Tensor) for h in (net.entity_head, net.value_head))
    restrict = plain_heads and not return_logits  # (a quantised head has no weight tensor to take rows of)
    subsets = [_candidates(allowed, step, static_ban, device) if restrict else None for step in range(n_steps)]

    tokens, out_levels, probs, logits_log, values_log = [], [], [], [], []
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    n_generated = torch.full((B,), n_steps, dtype=torch.long, device=device)
    max_level = net.config.n_levels - 1
    for step in range(n_steps):
        if subsets[step] is not None:  # one field's categories only: the heads' rows of that field
            tok, lvl, p = _restricted_step(
                net, last, subsets[step], counts, last_tok if counts is not None else None, end_id, logit_bias
            )
        else:
            logits, values = net.heads(last)
            logits, values = logits.float(), values.float()  # (B, V)
            if return_logits:
                logits_log.append(logits)
                values_log.append(values)
            if logit_bias is not None:
                logits = logits + logit_bias.to(logits.device, logits.dtype)
            ban = static_ban.expand(B, V)
            if counts is not None:
                seen_before_last = counts - torch.nn.functional.one_hot(last_tok, V).to(torch.int32)
                ban = ban | (seen_before_last > 0)
            if allowed is not None and allowed[step] is not None:
                ban = ban | ~allowed[step].to(device)
            masked = logits.masked_fill(ban, NEG_INF)
            # A row with every entity banned has nothing to choose (all -inf: the arg-max is meaningless and the
            # softmax NaN): it gets <E> with probability 0, as sampling ends a cell whose candidates ran out.
            stuck = ban.all(dim=-1)  # (B,)
            tok = torch.where(stuck, end_id, masked.argmax(dim=-1))  # (B,)
            p = torch.where(stuck, 0.0, torch.softmax(masked, dim=-1)[rows, tok])
            lvl = values[rows, tok].round().clamp(0, max_level).long()
        tokens.append(tok)
        out_levels.append(lvl)
        probs.append(p)
        if stop_at_end:
            newly = (tok == end_id) & ~finished
            n_generated = torch.where(newly, torch.full_like(n_generated, step + 1), n_generated)
            finished |= newly
        if step < n_steps - 1:
            last = net(tok[:, None], lvl[:, None], None, cache)[:, -1]
            states.append(last)
            if counts is not None:
                counts[rows, tok] += 1
                last_tok = tok
    return GreedyOutput(
        tokens=torch.stack(tokens, 1),
        levels=torch.stack(out_levels, 1),
        probs=torch.stack(probs, 1),
        n_generated=n_generated,
        hidden=torch.stack(states, 1),
        entity_logits=torch.stack(logits_log, 1) if return_logits else None,
        values=torch.stack(values_log, 1) if return_logits else None,
        pooled=pooled,
    )


@torch.inference_mode()
def hierarchical_decode(
    net: CSentenceTransformer,
    ids: Tensor,
    levels: Tensor,
    attention_mask: Tensor | None,
    first: Tensor,
    second: Tensor,
    *,
    padding: Literal["left", "right"] = "left",
    logit_bias: Tensor | None = None,
) -> GreedyOutput:
    """Two labels (coarse, then fine), the second chosen by its probability summed over every first label.

    Greedy decoding commits to the most likely first label and reads the second only after it, so a cell whose coarse
    types are nearly tied gets the fine type of whichever coarse type won by a hair. Here every first candidate ``c``
    is fed in turn: ``P(f) = sum_c P(c) P(f | c)``, the second entity is ``argmax_f P(f)``, and the first is the most
    likely one given it, ``argmax_c P(c) P(f | c)``. When one first label takes all the probability this is greedy
    decoding. Cost: the prompt pass, then one cached single-token step per first candidate (the cache rewound after
    each, so memory does not grow with the number of candidates).

    Parameters
    ----------
    net, ids, levels, attention_mask, padding, logit_bias
        As for :func:`greedy_decode`.
    first, second
        Ids ``(K1,)`` and ``(K2,)`` of the entities each step may choose (e.g. the coarse and the fine cell types).

    Returns
    -------
    A :class:`GreedyOutput` of two steps: ``probs`` holds ``P(c)`` and ``P(f | c)`` of the chosen pair (their product
    is the path probability), ``marginal`` holds ``P(f)``, ``hidden[:, 2]`` is the state at the chosen first label.
    """
    if len(first) == 0 or len(second) == 0:
        msg = "hierarchical_decode needs at least one candidate entity at each of its two steps."
        raise ValueError(msg)
    B, T = ids.shape
    device = ids.device
    rows = torch.arange(B, device=device)
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.bool, device=device)
    cache = net.new_cache(capacity=T + 1)
    hidden = net(ids, levels, attention_mask, cache, padding=padding)
    end = last_positions(attention_mask, padding)
    last = hidden[rows, end]
    first_logp, first_levels = _field_step(net, last, first, logit_bias)  # (B, K1) each
    length, bag = cache.length, cache.gene_bag
    second_logp, second_levels, after = [], [], []
    for k in range(len(first)):
        step = net(first[k].expand(B, 1), first_levels[:, k, None], None, cache)[:, -1]
        cache.length, cache.gene_bag = length, bag  # rewind: the next candidate takes the same position
        logp, lvl = _field_step(net, step, second, logit_bias)
        second_logp.append(logp)
        second_levels.append(lvl)
        after.append(step)
    joint = first_logp[:, :, None] + torch.stack(second_logp, 1)  # (B, K1, K2): log P(c) + log P(f | c)
    marginal = joint.logsumexp(1)  # (B, K2): log P(f)
    j = marginal.argmax(-1)
    i = joint[rows, :, j].argmax(-1)
    return GreedyOutput(
        tokens=torch.stack([first[i], second[j]], 1),
        levels=torch.stack([first_levels[rows, i], torch.stack(second_levels, 1)[rows, i, j]], 1),
        probs=torch.stack([first_logp[rows, i].exp(), torch.stack(second_logp, 1)[rows, i, j].exp()], 1),
        n_generated=torch.full((B,), 2, dtype=torch.long, device=device),
        hidden=torch.stack([hidden[rows, (end - 1).clamp(min=0)], last, torch.stack(after, 1)[rows, i]], 1),
        marginal=marginal[rows, j].exp(),
    )


def _field_step(
    net: CSentenceTransformer, hidden: Tensor, candidates: Tensor, logit_bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Log-softmax over ``candidates`` ``(K,)`` at ``hidden`` ``(B, C)``, and the level of each: ``(B, K)`` each."""
    head, value_head = net.entity_head, net.value_head
    logits = torch.nn.functional.linear(
        hidden, head.weight[candidates], head.bias[candidates] if head.bias is not None else None
    ).float()
    if logit_bias is not None:
        logits = logits + logit_bias.to(logits.device, logits.dtype)[candidates]
    values = torch.nn.functional.linear(
        hidden, value_head.weight[candidates], value_head.bias[candidates] if value_head.bias is not None else None
    ).float()
    return logits.log_softmax(-1), values.round().clamp(0, net.config.n_levels - 1).long()


def _candidates(
    allowed: list[Tensor | None] | None, step: int, static_ban: Tensor, device: torch.device
) -> Tensor | None:
    """Ids of the entities step ``step`` may choose, when it is restricted to some (``None``: all of them)."""
    if allowed is None or allowed[step] is None:
        return None
    ids = torch.nonzero(allowed[step].to(device) & ~static_ban).squeeze(1)
    return ids if ids.numel() else None  # nothing allowed: the full path gives every row <E> with probability 0


def _restricted_step(
    net: CSentenceTransformer,
    last: Tensor,
    candidates: Tensor,
    counts: Tensor | None,
    last_tok: Tensor | None,
    end_id: int,
    logit_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One greedy step over ``candidates`` ``(K,)`` only: both heads at those K entities, not the whole vocabulary.

    The same choice, probability and level as the full step with every other entity banned (their softmax terms are
    0), from ``K`` head rows instead of ``V``.
    """
    head, value_head = net.entity_head, net.value_head
    logits = torch.nn.functional.linear(
        last, head.weight[candidates], head.bias[candidates] if head.bias is not None else None
    ).float()  # (B, K)
    if logit_bias is not None:
        logits = logits + logit_bias.to(logits.device, logits.dtype)[candidates]
    with_end = torch.cat([candidates, candidates.new_tensor([end_id])])  # a stuck row's level is <E>'s value
    values = torch.nn.functional.linear(
        last, value_head.weight[with_end], value_head.bias[with_end] if value_head.bias is not None else None
    ).float()
    if counts is not None:  # entities already in the sequence, except the most recent one
        seen = counts[:, candidates] - (last_tok[:, None] == candidates[None, :]).to(counts.dtype)
        logits = logits.masked_fill(seen > 0, NEG_INF)
    stuck = torch.isneginf(logits).all(dim=-1)
    index = logits.argmax(dim=-1)
    rows = torch.arange(last.shape[0], device=last.device)
    tok = torch.where(stuck, end_id, candidates[index])
    p = torch.where(stuck, 0.0, torch.softmax(logits, dim=-1)[rows, index])
    lvl = values[rows, torch.where(stuck, len(candidates), index)].round().clamp(0, net.config.n_levels - 1).long()
    return tok, lvl, p


def last_positions(attention_mask: Tensor, padding: str) -> Tensor:
    """Position of each row's last real token."""
    if padding == "left":
        return torch.full((attention_mask.shape[0],), attention_mask.shape[1] - 1, device=attention_mask.device)
    if padding != "right":
        msg = f"`padding` must be 'left' or 'right', got {padding!r}."
        raise ValueError(msg)
    return attention_mask.sum(1) - 1
