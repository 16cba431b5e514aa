"""Batched sampling with a key/value cache: conditional cell generation.

One pass over the padded prompts fills the cache (see :mod:`.decoding` for the padding rules), then one cached step
per new entity for the whole batch; finished cells leave the batch. Everything inside a step is a tensor operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .decoding import NEG_INF, last_positions
from .model import CSentenceTransformer


@dataclass
class SampleOutput:
    """Result of :func:`sample_decode`: ragged new tokens per prompt.

    Attributes
    ----------
    tokens, levels
        ``(B, max_new_tokens)`` with ``-1`` after a cell's last token.
    lengths
        ``(B,)`` number of new tokens per cell (including a final ``<E>`` if it was sampled).
    ended
        ``(B,)`` True where the cell ended with ``<E>`` (False: it reached ``max_new_tokens``).
    """

    tokens: Tensor
    levels: Tensor
    lengths: Tensor
    ended: Tensor


@torch.inference_mode()
def sample_decode(
    net: CSentenceTransformer,
    ids: Tensor,
    levels: Tensor,
    attention_mask: Tensor | None,
    max_new_tokens: int,
    *,
    candidates: Tensor | None = None,
    end_id: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    level_temperature: float | None = None,
    n_genes: Tensor | None = None,
    guidance: float = 1.0,
    unconditional: tuple[Tensor, Tensor, Tensor | None] | None = None,
    level_guidance: float = 1.0,
    guidance_steps: int | None = None,
    gamma: float = 1.0,
    generator: torch.Generator | None = None,
    ban_seen: Literal["all", "all_but_last"] = "all",
    level_range: tuple[int, int] = (1, 10),
    compact_fraction: float = 0.125,
    padding: Literal["left", "right"] = "left",
) -> SampleOutput:
    """Sample continuations of a padded batch of prompts (conditional cell generation).

    At each step, for every unfinished cell: entities already in its sentence are banned, everything outside
    ``candidates`` is banned, logits are divided by ``temperature``, cut to the ``top_k`` largest and to the nucleus
    (the smallest set of most likely entities whose probability reaches ``top_p``), the softmax probability of
    ``<E>`` is multiplied by ``gamma`` (the original's length control; < 1 gives longer cells), and one entity is
    drawn. Its value is drawn from the level head's distribution for that entity (logits divided by
    ``level_temperature``, by default ``temperature``) when the network has one (``generation_objective="next"``),
    else it is the value head at that entity, rounded; either is clipped to ``level_range`` (``<E>`` gets 0). With
    ``n_genes``, a cell's length is set instead of sampled: ``<E>`` is banned until it has drawn ``n_genes`` new
    entities and certain right after. With ``unconditional`` prompts and ``guidance`` ``w != 1``, the entity logits
    are classifier-free guided, ``u + w (c - u)`` from the logits ``c`` given the prompt and ``u`` given the same
    prompt without its condition (both continuations see the same drawn entities), at the first ``guidance_steps``
    draws only when that is set; ``level_guidance`` does the same to the level head's logits of the drawn gene. A
    cell stops at ``<E>`` or after ``max_new_tokens``; finished cells are dropped from the batch (and the cache) once
    they are at least ``compact_fraction`` of it, so they stop costing compute. A cell with nothing left to draw
    (every candidate already in its sentence, or only ``<E>`` left with ``gamma=0``) draws ``<E>``: it is complete.

    Parameters
    ----------
    net
        The transformer.
    ids, levels, attention_mask
        Padded prompts ``(B, T)`` (see ``padding``).
    max_new_tokens
        Maximum number of new tokens per cell.
    candidates
        Boolean ``(V,)`` mask of the entities that may be drawn (genes and ``<E>``); ``None``: all.
    end_id
        Id of ``<E>``.
    temperature, top_k, gamma
        Sampling controls (see above).
    top_p
        Nucleus filter in ``(0, 1]``: at each step only the most likely entities whose cumulative probability first
        reaches ``top_p`` may be drawn (the most likely one always may); ``None`` or 1: no filter.
    level_temperature
        Temperature of the level head's distribution; ``None``: ``temperature``.
    n_genes
        ``(B,)`` integers: the number of new entities each cell draws before its ``<E>`` (e.g. gene counts drawn from
        real cells of the requested kind); a negative entry leaves that cell's stop to the model; ``None``: every
        cell's. A cell that runs out of candidates earlier still ends (as above).
    guidance, unconditional
        Classifier-free guidance weight (1: none; > 1 pushes cells towards what the condition adds) and the
        ``(ids, levels, attention_mask)`` of the prompts without their condition (``(B, T')``, padded on the same
        side as ``ids``; e.g. the ``<generate>`` prompt alone). A model trained with context dropout has seen both.
    level_guidance
        Classifier-free guidance weight of the levels (1: none, the levels drawn given the condition alone; needs
        ``unconditional`` and a network with a level head).
    guidance_steps
        Guide the entity logits at the first ``guidance_steps`` draws of each cell only (``None``: at every draw).
    generator
        Random generator on the device of ``ids``; a fixed seed reproduces the same cells on the same device.
    ban_seen
        ``"all_but_last"`` reproduces the original scMulan, which does not ban the most recent entity.
    level_range
        Clip range of generated values.
    compact_fraction
        Fraction of finished rows that triggers dropping them from the batch.
    padding
        Side of the prompts' padding (see :func:`greedy_decode`).
    """
    if temperature <= 0:
        msg = f"`temperature` must be > 0, got {temperature}."
        raise ValueError(msg)
    if top_p is not None and not 0 < top_p <= 1:
        msg = f"`top_p` must be in (0, 1] (1 or None: no nucleus filter), got {top_p}."
        raise ValueError(msg)
    guided = unconditional is not None and (guidance != 1.0 or level_guidance != 1.0)
    if guidance != 1.0 and unconditional is None:
        msg = f"`guidance={guidance}` needs the `unconditional` prompts to contrast with (or guidance=1: none)."
        raise ValueError(msg)
    if level_guidance != 1.0 and unconditional is None:
        msg = f"`level_guidance={level_guidance}` needs the `unconditional` prompts (or level_guidance=1: none)."
        raise ValueError(msg)
    if not level_guidance >= 0:
        msg = f"`level_guidance` must be >= 0 (1: none), got {level_guidance}."
        raise ValueError(msg)
    if guidance_steps is not None and not guidance_steps >= 0:
        msg = f"`guidance_steps` must be >= 0 (None: guide every draw), got {guidance_steps}."
        raise ValueError(msg)
    if level_temperature is None:
        level_temperature = temperature
    elif level_temperature <= 0:
        msg = f"`level_temperature` must be > 0 (None: the same as `temperature`), got {level_temperature}."
        raise ValueError(msg)
    B, T = ids.shape
    V = net.config.vocab_size
    device = ids.device
    if n_genes is not None:
        n_genes = torch.as_tensor(n_genes, device=device).long()
        if n_genes.shape != (B,):
            msg = f"`n_genes` must hold one count per prompt, shape ({B},), got {tuple(n_genes.shape)}."
            raise ValueError(msg)
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.bool, device=device)
    out_tokens = torch.full((B, max_new_tokens), -1, dtype=torch.long, device=device)
    out_levels = torch.full((B, max_new_tokens), -1, dtype=torch.long, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    ended = torch.zeros(B, dtype=torch.bool, device=device)
    if max_new_tokens <= 0:
        return SampleOutput(out_tokens, out_levels, lengths, ended)

    cache = net.new_cache(capacity=T + max_new_tokens)
    end = last_positions(attention_mask, padding)
    rows = torch.arange(B, device=device)
    last = net(ids, levels, attention_mask, cache, padding=padding)[rows, end]  # (B, C)
    if guided:
        u_ids, u_levels, u_mask = (None if x is None else x.to(device) for x in unconditional)
        if u_mask is None:
            u_mask = torch.ones(u_ids.shape, dtype=torch.bool, device=device)
        if u_ids.shape[0] != B:
            msg = f"`unconditional` must hold one prompt per prompt ({B}), got {u_ids.shape[0]}."
            raise ValueError(msg)
        u_cache = net.new_cache(capacity=u_ids.shape[1] + max_new_tokens)
        u_last = net(u_ids, u_levels, u_mask, u_cache, padding=padding)[rows, last_positions(u_mask, padding)]
    counts = torch.zeros(B, V, dtype=torch.int32, device=device)
    counts.scatter_add_(1, ids, attention_mask.to(torch.int32))
    last_tok = ids[rows, end]
    not_candidate = (
        ~candidates.to(device) if candidates is not None else torch.zeros(V, dtype=torch.bool, device=device)
    )
    end_one_hot = torch.nn.functional.one_hot(torch.tensor(end_id, device=device), V).to(torch.float32)  # (V,)
    active = torch.arange(B, device=device)  # global row of each current row
    alive = torch.ones(B, dtype=torch.bool, device=device)
    lo, hi = level_range
    sample_levels = getattr(net, "level_head", None) is not None

    for step in range(max_new_tokens):
        b = active.shape[0]
        logits, values = net.heads(last)
        logits, values = logits.float(), values.float()  # (b, V)
        w = guidance if guidance_steps is None or step < guidance_steps else 1.0
        if guided and w != 1.0:
            u_logits = net.heads(u_last)[0].float()
            logits = u_logits + w * (logits - u_logits)
        seen = counts > 0
        if ban_seen == "all_but_last":
            seen = (counts - torch.nn.functional.one_hot(last_tok, V).to(torch.int32)) > 0
        logits = logits.masked_fill(seen | not_candidate, NEG_INF)
        if n_genes is not None:  # <E> banned before a cell's count, and the only choice at it
            target = n_genes[active]  # (b,)
            fixed = target >= 0
            logits[:, end_id] = logits[:, end_id].masked_fill(fixed & (step < target), NEG_INF)
            logits = logits.masked_fill((fixed & (step >= target))[:, None], NEG_INF)
            logits[:, end_id] = logits[:, end_id].masked_fill(fixed & (step >= target), 0.0)
        if temperature != 1.0:
            logits = logits / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, V), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, NEG_INF)
        probs = torch.softmax(logits, dim=-1)
        if top_p is not None and top_p < 1:
            probs = _nucleus(probs, top_p)
        probs[:, end_id] *= gamma
        # A row with nothing left to draw — every candidate seen (all -inf: NaN after the softmax), or only <E> left
        # with gamma=0 (all zeros) — would make `multinomial` fail: it draws <E> for certain, which ends the cell.
        # Finished rows still in the batch (below the compaction threshold) keep drawing, and their output is
        # discarded: they also get a certain <E>.
        drawable = alive & (probs.sum(dim=-1) > 0)  # False for NaN sums too
        probs = torch.where(drawable[:, None], probs, end_one_hot)
        tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (b,)
        rows = torch.arange(b, device=device)
        if sample_levels:  # the level head's distribution for the chosen gene (level k is column k - 1)
            level_logits = net.level_logits(last, tok).float()
            if guided and level_guidance != 1.0:
                u_level = net.level_logits(u_last, tok).float()
                level_logits = u_level + level_guidance * (level_logits - u_level)
            level_probs = torch.softmax(level_logits / level_temperature, dim=-1)
            lvl = (torch.multinomial(level_probs, 1, generator=generator).squeeze(1) + 1).clamp(lo, hi)
        else:
            lvl = values[rows, tok].round().clamp(lo, hi).long()
        lvl = torch.where(tok == end_id, torch.zeros_like(lvl), lvl)
        write = active[alive]
        out_tokens[write, step] = tok[alive]
        out_levels[write, step] = lvl[alive]
        lengths[write] += 1
        is_end = (tok == end_id) & alive
        ended[active[is_end]] = True
        alive = alive & ~is_end
        n_alive = int(alive.sum())  # the step's one host sync (ending, and compaction below)
        if step == max_new_tokens - 1 or n_alive == 0:
            break
        counts[rows, tok] += 1
        last_tok = tok
        last = net(tok[:, None], lvl[:, None], None, cache)[:, -1]
        if guided and (level_guidance != 1.0 or guidance_steps is None or step + 1 < guidance_steps):
            u_last = net(tok[:, None], lvl[:, None], None, u_cache)[:, -1]  # not after the guided draws: unused
        n_dead = b - n_alive
        if n_dead and n_dead >= max(1, int(compact_fraction * b)):
            keep = alive.nonzero().squeeze(1)
            cache.select(keep)
            if guided:
                u_cache.select(keep)
                u_last = u_last[keep]
            active, last, counts, last_tok = active[keep], last[keep], counts[keep], last_tok[keep]
            alive = torch.ones(keep.shape[0], dtype=torch.bool, device=device)
    return SampleOutput(out_tokens, out_levels, lengths, ended)


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Zero every probability outside each row's nucleus (unnormalised: ``multinomial`` needs no normalisation).

    The nucleus of a row is the smallest set of its most likely entries whose probabilities sum to at least
    ``top_p`` times the row's total; ties at its edge are broken by position, as ``torch.sort`` orders them.

    Parameters
    ----------
    probs
        ``(B, V)`` non-negative probabilities (rows may sum to less than 1, or be all zero or NaN: left as they are).
    top_p
        Probability mass to keep, in ``(0, 1]``.

    Returns
    -------
    ``probs`` with the entries outside the nucleus set to 0.
    """
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    total = sorted_probs.sum(-1, keepdim=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the strictly more likely entries
    keep_sorted = before < top_p * total  # the first entry is always kept (before == 0 < top_p * total when > 0)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return probs.masked_fill(~keep & (total > 0), 0.0)
