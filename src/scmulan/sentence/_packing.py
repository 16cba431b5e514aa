"""Packing training sentences into fixed-token rows, so the transformer computes (almost) no padding.

A right-padded training batch (:func:`~scmulan.sentence.pad`) keeps its padded layout for the objective, and gains
a packed copy of its tokens for the transformer: the sentences are dealt to ``R`` rows of about ``row_tokens``
tokens each, longest first in a back-and-forth order (row 0, 1, …, R-1, R-1, …, 0, …), which evens out the rows'
fills, and laid end to end within each row. Each packed position records its sentence (its *document*), so
attention stays within a sentence (block-diagonal causal). The model has no positional embedding, so a sentence's
hidden states do not depend on where in the row it sits: the packed forward gives the padded forward's hidden
states at every real position, and the heads and the objective see exactly what they would have seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PACKED_KEYS = ("packed_ids", "packed_levels", "packed_document", "packed_source", "packed_target")


def pack_layout(lengths: np.ndarray, row_tokens: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Where each sentence goes in the packed rows.

    The sentences, longest first, are dealt to ``R`` rows back and forth (row 0, 1, …, R-1, R-1, …, 0, …), which
    evens out the rows' fills; ``R`` is chosen between ``ceil(total / row_tokens)`` and twice that as the count
    with the fewest computed positions (rows times the fullest row's fill).

    Parameters
    ----------
    lengths
        ``(B,)`` sentence lengths.
    row_tokens
        Target tokens per row; rows are never shorter than the longest sentence (no sentence is split).

    Returns
    -------
    ``row`` and ``start`` ``(B,)`` (each sentence's row and first column), the number of rows, and the row length
    (the fullest row's fill).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if row_tokens < 1:
        msg = f"`row_tokens` must be >= 1, got {row_tokens}."
        raise ValueError(msg)
    B = len(lengths)
    if B == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0
    capacity = max(int(row_tokens), int(lengths.max()))
    fewest = min(B, max(1, -(-int(lengths.sum()) // capacity)))
    order = np.argsort(-lengths, kind="stable")  # longest first
    best = None
    for n_rows in range(fewest, min(B, 2 * fewest) + 1):  # a handful of candidate row counts, each vectorised
        row_of_rank = _back_and_forth(B, n_rows)
        fills = np.bincount(row_of_rank, weights=lengths[order], minlength=n_rows).astype(np.int64)
        if best is None or n_rows * fills.max() < best[0] * best[2].max():
            best = (n_rows, row_of_rank, fills)
    n_rows, row_of_rank, fills = best
    row = np.empty(B, dtype=np.int64)
    row[order] = row_of_rank
    # Within a row, sentences follow in rank order: start = fill of the row before this sentence.
    by_row = np.lexsort((np.arange(B), row_of_rank))  # ranks grouped by row, in rank order
    sorted_len = lengths[order][by_row]
    row_start = np.cumsum(fills) - fills
    cum = np.cumsum(sorted_len) - sorted_len  # start of each sentence in the concatenation of the rows
    start = np.empty(B, dtype=np.int64)
    start[order[by_row]] = cum - row_start[row_of_rank[by_row]]
    return row, start, n_rows, int(fills.max())


def _back_and_forth(n: int, n_rows: int) -> np.ndarray:
    """Row of the ``i``-th item dealt back and forth over ``n_rows`` rows: 0, 1, …, R-1, R-1, …, 0, 0, 1, …"""
    lap, pos = np.divmod(np.arange(n), n_rows)
    return np.where(lap % 2 == 0, pos, n_rows - 1 - pos)


def pack_batch(batch: dict[str, torch.Tensor], row_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """Add a packed copy of a right-padded training batch's tokens (see the module notes).

    Parameters
    ----------
    batch
        A right-padded batch with ``ids``, ``levels`` and ``lengths`` (as :func:`~scmulan.sentence.pad` and
        :class:`~scmulan.sentence.TrainingSentenceDataset` make it); returned with the padded keys unchanged.
    row_tokens
        Target tokens per packed row (default: four times the longest sentence). Longer rows waste less on
        uneven fills; with the dense attention mask (CPU) the attention cost grows with the row length, with
        FlexAttention (CUDA) it does not.

    Returns
    -------
    The batch plus ``packed_ids`` and ``packed_levels`` ``(R, P)`` int64, ``packed_document`` ``(R, P)`` int64
    (the sentence of each position, ``-1`` at the padding of a row's end), and ``packed_source`` / ``packed_target``
    ``(N,)`` int64: for each of the ``N`` real tokens, its flat index in the packed ``(R * P)`` and in the padded
    ``(B * T)`` layout. Use it with :meth:`scmulan.nn.CSentenceTransformer.forward` (``document=``).
    """
    import torch

    lengths = batch["lengths"].cpu().numpy().astype(np.int64)
    B, T = batch["ids"].shape
    longest = int(lengths.max()) if B else 0
    row, start, n_rows, width = pack_layout(lengths, row_tokens or 4 * max(longest, 1))
    local = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    sentence = np.repeat(np.arange(B), lengths)
    target = sentence * T + local
    source = row[sentence] * width + start[sentence] + local
    ids = np.zeros(n_rows * width, dtype=np.int64)
    levels = np.zeros(n_rows * width, dtype=np.int64)
    document = np.full(n_rows * width, -1, dtype=np.int64)
    ids[source] = batch["ids"].reshape(-1).cpu().numpy()[target]
    levels[source] = batch["levels"].reshape(-1).cpu().numpy()[target]
    document[source] = sentence
    packed = {
        "packed_ids": torch.from_numpy(ids.reshape(n_rows, width)),
        "packed_levels": torch.from_numpy(levels.reshape(n_rows, width)),
        "packed_document": torch.from_numpy(document.reshape(n_rows, width)),
        "packed_source": torch.from_numpy(source),
        "packed_target": torch.from_numpy(target),
    }
    return {**batch, **packed}


def real_token_fraction(batch: dict[str, torch.Tensor]) -> float:
    """Fraction of the positions the transformer computes that are real tokens (packed layout when present)."""
    real = int(batch["lengths"].sum())
    computed = batch["packed_ids"].numel() if "packed_ids" in batch else batch["ids"].numel()
    return real / max(computed, 1)


def forward_heads(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The network's head outputs ``(B, T, V)`` in the batch's padded layout, computed on packed rows if it has them.

    Without packed keys this is ``net.heads(net(ids, levels))`` over the right-padded batch (plain causal
    attention). With them (:func:`pack_batch`), the transformer runs on the packed rows with block-diagonal causal
    attention, the heads only at the ``N`` real tokens, and their outputs are placed at the padded positions (zeros
    at padding, which the objective never reads), so the objective and per-sentence logging are unchanged.

    Parameters
    ----------
    net
        A :class:`~scmulan.nn.CSentenceTransformer`.
    batch
        A right-padded training batch, optionally with the keys of :func:`pack_batch`.
    """
    if "packed_ids" not in batch:
        return net.heads(net(batch["ids"], batch["levels"]))  # right-padded: plain causal attention
    hidden = net(batch["packed_ids"], batch["packed_levels"], document=batch["packed_document"])
    real = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["packed_source"])  # (N, C)
    B, T = batch["ids"].shape
    target = batch["packed_target"]
    outputs = []
    for out in net.heads(real):  # (N, V) each
        padded = out.new_zeros(B * T, out.shape[-1]).index_copy(0, target, out)
        outputs.append(padded.view(B, T, -1))
    return tuple(outputs)
