"""Padding and length bucketing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.sentence import Sentences, length_batches, pad
from scmulan.sentence._ragged import offsets_from_lengths

PAD = 1


@st.composite
def sentences(draw, with_groups: bool = True) -> Sentences:
    lengths = np.asarray(draw(st.lists(st.integers(1, 9), min_size=1, max_size=10)), dtype=np.int64)
    total = int(lengths.sum())
    ids = np.asarray(draw(st.lists(st.integers(2, 300), min_size=total, max_size=total)), dtype=np.int64)
    levels = np.asarray(draw(st.lists(st.integers(0, 10), min_size=total, max_size=total)), dtype=np.int64)
    groups = None
    if with_groups:
        groups = np.asarray(draw(st.lists(st.integers(0, 1000), min_size=total, max_size=total)), dtype=np.int16)
    return Sentences(ids, levels, offsets_from_lengths(lengths), groups)


@settings(max_examples=150, deadline=None)
@given(sentences(), st.sampled_from(["left", "right"]), st.data())
def test_pad_never_changes_content(s, side, data):
    rows = np.asarray(data.draw(st.lists(st.integers(0, len(s) - 1), min_size=1, max_size=8)))
    batch = pad(s, rows, pad_id=PAD, side=side)
    ids, levels, mask = batch["ids"].numpy(), batch["levels"].numpy(), batch["attention_mask"].numpy()
    lengths = s.lengths[rows]
    assert ids.shape == levels.shape == mask.shape == (len(rows), lengths.max())
    np.testing.assert_array_equal(batch["lengths"].numpy(), lengths)
    np.testing.assert_array_equal(mask.sum(1), lengths)
    assert (ids[~mask] == PAD).all()
    assert (levels[~mask] == 0).all()
    assert (batch["groups"].numpy()[~mask] == 0).all()
    T = ids.shape[1]
    for b, r in enumerate(rows):
        want_ids, want_levels = s.cell(r)
        real = slice(T - lengths[b], T) if side == "left" else slice(0, lengths[b])
        assert mask[b, real].all()  # the real tokens are one contiguous run at the padded side's opposite end
        np.testing.assert_array_equal(ids[b, real], want_ids)
        np.testing.assert_array_equal(levels[b, real], want_levels)
        np.testing.assert_array_equal(batch["groups"].numpy()[b, real], s.groups[s.offsets[r] : s.offsets[r + 1]])


def test_pad_defaults_and_dtypes():
    s = Sentences(np.array([5, 6, 7]), np.array([1, 2, 0]), np.array([0, 2, 3]))
    batch = pad(s, pad_id=0)  # all rows, left
    assert "groups" not in batch
    assert batch["ids"].tolist() == [[5, 6], [0, 7]]
    assert batch["attention_mask"].tolist() == [[True, True], [False, True]]
    assert batch["levels"].tolist() == [[1, 2], [0, 0]]
    import torch

    assert batch["ids"].dtype == torch.int64
    assert batch["attention_mask"].dtype == torch.bool
    right = pad(s, np.array([1, 0]), pad_id=9, side="right")
    assert right["ids"].tolist() == [[7, 9], [5, 6]]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 50), min_size=0, max_size=60),
    st.integers(1, 9),
    st.one_of(st.none(), st.integers(1, 200)),
    st.booleans(),
)
def test_length_batches_partition(lengths, batch_size, max_tokens, shuffled):
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng(0) if shuffled else None
    batches = length_batches(lengths, batch_size, rng=rng, max_tokens=max_tokens)
    flat = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(np.sort(flat), np.arange(len(lengths)))  # every index exactly once
    for b in batches:
        assert 1 <= len(b) <= batch_size
        assert np.all(np.diff(lengths[b]) >= 0)  # sorted by length inside a batch
        if max_tokens is not None and len(b) > 1:
            assert len(b) * lengths[b].max() <= max_tokens
    if not shuffled:  # shortest first: batches do not overlap in length
        for a, b in zip(batches, batches[1:], strict=False):
            assert lengths[a].max() <= lengths[b].min()
    else:  # the same batches, in another order
        plain = length_batches(lengths, batch_size, max_tokens=max_tokens)
        assert sorted(map(tuple, batches)) == sorted(map(tuple, plain))


def test_length_batches_max_tokens_packs_greedily():
    lengths = np.array([2, 2, 2, 2, 10, 10])
    batches = length_batches(lengths, 8, max_tokens=8)
    assert [len(b) for b in batches] == [4, 1, 1]  # 4 x 2 fits, 10 alone exceeds but must go
    with pytest.raises(ValueError, match="batch_size"):
        length_batches(lengths, 0)
