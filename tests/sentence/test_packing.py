"""Packing sentences into fixed-token rows: layout, contents, and the fraction of real tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.sentence import Sentences, pack_batch, pack_layout, pad, real_token_fraction
from scmulan.sentence._ragged import offsets_from_lengths


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=40), st.integers(1, 200))
def test_layout_places_every_sentence_once_without_overlap(lengths, row_tokens):
    lengths = np.asarray(lengths)
    row, start, n_rows, width = pack_layout(lengths, row_tokens)
    assert width >= lengths.max()
    assert 1 <= n_rows <= len(lengths)
    assert ((start >= 0) & (start + lengths <= width)).all()
    occupied = np.zeros((n_rows, width), dtype=np.int64)
    for r, s, n in zip(row, start, lengths, strict=True):
        occupied[r, s : s + n] += 1
    assert occupied.max() == 1  # no two sentences share a position
    assert occupied.sum() == lengths.sum()


def test_layout_of_similar_lengths_wastes_little():
    lengths = np.random.default_rng(0).integers(400, 700, size=64)
    row, start, n_rows, width = pack_layout(lengths, 4 * lengths.max())
    assert lengths.sum() / (n_rows * width) >= 0.95


def test_layout_refuses_bad_row_tokens():
    with pytest.raises(ValueError, match="row_tokens"):
        pack_layout(np.array([3, 4]), 0)


def _sentences(lengths, seed=0):
    rng = np.random.default_rng(seed)
    total = int(np.sum(lengths))
    return Sentences(
        rng.integers(2, 300, total),
        rng.integers(0, 11, total),
        offsets_from_lengths(np.asarray(lengths)),
        rng.integers(0, 5, total).astype(np.int16),
    )


def test_packed_tokens_are_the_padded_tokens():
    lengths = [5, 9, 2, 7, 7, 1, 12]
    batch = pad(_sentences(lengths), pad_id=1, side="right")
    packed = pack_batch(batch, row_tokens=16)
    for key in ("ids", "levels", "groups", "lengths", "attention_mask"):
        assert torch.equal(packed[key], batch[key])  # the padded layout is kept for the objective
    flat = lambda t: t.reshape(-1)
    src, dst = packed["packed_source"], packed["packed_target"]
    assert len(src) == sum(lengths)
    assert torch.equal(flat(packed["packed_ids"])[src], flat(batch["ids"])[dst])
    assert torch.equal(flat(packed["packed_levels"])[src], flat(batch["levels"])[dst])
    doc = flat(packed["packed_document"])
    assert torch.equal(doc[src], dst // batch["ids"].shape[1])  # each position's sentence
    assert (doc >= 0).sum() == sum(lengths)  # everything else is row-end padding
    # each sentence is contiguous and in order within its row
    for b, n in enumerate(lengths):
        pos = src[dst // batch["ids"].shape[1] == b]
        assert torch.equal(pos, torch.arange(int(pos[0]), int(pos[0]) + n))
    assert real_token_fraction(packed) > real_token_fraction(batch)
