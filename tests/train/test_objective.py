"""The set objective against a dense per-position oracle (BCE over the whole vocabulary, multi-hot targets)."""

import pytest
import torch
import torch.nn.functional as F

from scmulan.sentence import END_GROUP, GENE_SET_GROUP
from scmulan.train import remaining_set_mask, set_objective

V = 23


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 11
    ids = torch.randint(1, V, (B, T), generator=g)
    levels = torch.zeros(B, T, dtype=torch.long)
    groups = torch.zeros(B, T, dtype=torch.int16)
    # 0: generation: 3 context tokens, <generate> at 3, genes 4..9 (one unordered set), <E> at 10
    ids[0, 4:10] = torch.randperm(V - 1, generator=g)[:6] + 1
    levels[0, 4:10] = torch.randint(1, 11, (6,), generator=g)
    groups[0, 4:10] = GENE_SET_GROUP
    groups[0, 10] = END_GROUP
    # 1: annotation: genes 0..6 (prompt, with levels), <annotate> at 7, coarse 8, fine 9, <E> 10
    levels[1, :7] = torch.randint(1, 11, (7,), generator=g)
    groups[1, 8], groups[1, 9], groups[1, 10] = 2, 3, END_GROUP
    # 2: a short annotation sentence, right-padded after position 5
    levels[2, :3] = torch.randint(1, 11, (3,), generator=g)
    groups[2, 4], groups[2, 5] = 2, END_GROUP
    return ids, levels, groups


def _oracle(logits, values, ids, levels, groups, positives):
    entity, value = [], []
    for b in range(ids.shape[0]):
        per_pos, errs = [], []
        for t in range(ids.shape[1] - 1):
            g = int(groups[b, t + 1])
            if g <= 0:
                continue
            later = [s for s in range(t + 1, ids.shape[1]) if int(groups[b, s]) == g]
            y = torch.zeros(V)
            y[ids[b, later]] = 1.0
            w = torch.ones(V)
            if positives == "mean":
                w[y > 0] = 1.0 / len(later)
            per_pos.append(F.binary_cross_entropy_with_logits(logits[b, t], y, weight=w, reduction="sum"))
            errs += [(values[b, t, ids[b, s]] - levels[b, s]) ** 2 for s in later if levels[b, s] > 0]
        entity.append(torch.stack(per_pos).mean())
        if errs:
            value.append(torch.stack(errs).mean())
    return torch.stack(entity).mean(), torch.stack(value).mean()


@pytest.mark.parametrize("positives", ["mean", "sum"])
def test_objective_equals_dense_oracle(positives):
    ids, levels, groups = _batch()
    g = torch.Generator().manual_seed(1)
    logits, values = torch.randn(3, 11, V, generator=g), 3 * torch.randn(3, 11, V, generator=g)
    out = set_objective(logits, values, ids, levels, groups, positives=positives, value_weight=0.5)
    entity, value = _oracle(logits, values, ids, levels, groups, positives)
    torch.testing.assert_close(out.entity, entity)
    torch.testing.assert_close(out.value, value)
    torch.testing.assert_close(out.loss, entity + 0.5 * value)


def test_remaining_set_targets_follow_the_groups():
    ids, levels, groups = _batch()
    positions, targets = remaining_set_mask(groups)
    # generation: the <generate> position targets all six genes, the last gene position targets <E> only
    assert positions[0, 3]
    assert targets[0, 3].sum() == 6
    assert targets[0, 3, 4:10].all()
    assert targets[0, 9].nonzero().flatten().tolist() == [10]
    # annotation labels are ordered: one target each
    assert [int(targets[1, t].sum()) for t in (7, 8, 9)] == [1, 1, 1]
    assert not positions[1, :7].any()  # the prompt is never a target
    assert not positions[2, 5:].any()  # nor the padding


def test_hits_are_accuracy_of_label_positions():
    ids, levels, groups = _batch()
    logits = torch.full((3, 11, V), -5.0)
    for t, s in ((7, 8), (8, 9), (9, 10)):  # sentence 1: make the right label the top entity at every step
        logits[1, t, ids[1, s]] = 5.0
    out = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups)
    assert out.hits[1] == 1.0
    assert out.hits[2] < 1.0


def test_gradient_flows_and_bad_option_raises():
    ids, levels, groups = _batch()
    logits = torch.randn(3, 11, V, requires_grad=True)
    out = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups)
    out.loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[2, 6:].abs().sum() == 0  # padding gets no gradient
    with pytest.raises(ValueError, match="positives"):
        set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups, positives="max")
