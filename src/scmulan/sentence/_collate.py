"""Padding sentences into batches, and length bucketing so that batches waste little padding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from ._assemble import Sentences

if TYPE_CHECKING:
    import torch


def pad(
    sentences: Sentences, rows: np.ndarray | None = None, *, pad_id: int, side: Literal["left", "right"] = "left"
) -> dict[str, torch.Tensor]:
    """Pad sentences into ``(B, T)`` tensors.

    scmulan right-pads everywhere, training and inference alike (``side="right"``): padding after a sentence never
    reaches its real positions under the causal mask, so plain causal attention serves (SDPA's fused kernels) and,
    as the network has no positional embedding, every cell gets exactly its unpadded outputs; decoding steps then
    mask the padded keys. ``side="left"`` (every sentence ends at the last column) needs an explicit attention mask.

    Parameters
    ----------
    sentences
        The sentences.
    rows
        Which sentences, in batch order (default: all).
    pad_id
        Entity id written at padded positions (they are masked out and never reach the network).
    side
        ``"right"`` (what scmulan's training and inference pass) or ``"left"`` (the default).

    Returns
    -------
    ``ids``, ``levels`` (int64), ``attention_mask`` (bool, True for real tokens), ``lengths`` (int64), and for
    training sentences ``groups`` (int16, 0 at padding).
    """
    import torch

    rows = np.arange(len(sentences)) if rows is None else np.asarray(rows, dtype=np.int64)
    lengths = sentences.lengths[rows]
    B, T = len(rows), int(lengths.max()) if len(rows) else 0
    local = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(sentences.offsets[rows], lengths) + local
    row = np.repeat(np.arange(B), lengths)
    col = local + np.repeat(T - lengths, lengths) if side == "left" else local
    ids = np.full((B, T), pad_id, dtype=np.int64)
    levels = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=bool)
    ids[row, col] = sentences.ids[src]
    levels[row, col] = sentences.levels[src]
    mask[row, col] = True
    batch = {
        "ids": torch.from_numpy(ids),
        "levels": torch.from_numpy(levels),
        "attention_mask": torch.from_numpy(mask),
        "lengths": torch.from_numpy(lengths.astype(np.int64)),
    }
    if sentences.groups is not None:
        groups = np.zeros((B, T), dtype=np.int16)
        groups[row, col] = sentences.groups[src]
        batch["groups"] = torch.from_numpy(groups)
    return batch


def length_batches(
    lengths: np.ndarray, batch_size: int, *, rng: np.random.Generator | None = None, max_tokens: int | None = None
) -> list[np.ndarray]:
    """Split sentences into batches of similar length.

    Sentences are sorted by length and cut into consecutive batches of at most ``batch_size`` sentences (and, with
    ``max_tokens``, at most ``max_tokens`` padded tokens), so a batch pads to a length close to all of its members.

    Parameters
    ----------
    lengths
        Length of every sentence.
    batch_size
        Maximum number of sentences per batch.
    rng
        Shuffle the order of the batches (training); ``None`` keeps them shortest first.
    max_tokens
        Optional cap on ``batch rows * longest length``.
    """
    if batch_size < 1:
        msg = f"`batch_size` must be >= 1, got {batch_size}."
        raise ValueError(msg)
    order = np.argsort(lengths, kind="stable")
    if max_tokens is None:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        batches, start = [], 0
        sorted_len = np.asarray(lengths)[order]
        while start < len(order):
            # Sorted ascending, so a batch's padded size is rows * its last length, increasing along the window.
            window = sorted_len[start : start + batch_size]
            fits = np.arange(1, len(window) + 1) * window <= max_tokens
            stop = start + max(1, int(np.searchsorted(~fits, True)))  # first window position that does not fit
            batches.append(order[start:stop])
            start = stop
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
