"""The set objective against a dense per-position oracle (BCE over the whole vocabulary, multi-hot targets)."""

import numpy as np
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


def _labels(tau=0.0, smoothing=0.0, prior=None):
    """Entities 15..18 are field 0 (coarse types), 19..22 field 1 (fine types); the rest are no labels."""
    from scmulan.train import LabelTargets

    field_of = torch.full((V,), -1, dtype=torch.long)
    field_of[15:19], field_of[19:23] = 0, 1
    members = torch.stack([field_of == 0, field_of == 1])
    return LabelTargets(field_of, members, prior, tau, smoothing)


def _label_batch():
    ids, levels, groups = _batch()
    ids[1, 8], ids[1, 9] = 16, 21  # sentence 1's coarse and fine labels
    ids[2, 4] = 18
    ids[:, :8][ids[:, :8] >= 15] = 3  # labels appear only at label positions
    ids[0, 4:10] = torch.arange(4, 10)  # generation genes are no labels
    return ids, levels, groups


def test_label_positions_use_a_softmax_over_the_field():
    ids, levels, groups = _label_batch()
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 11, V, generator=g)
    plain = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups)
    out = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups, labels=_labels())
    # sentence 1: positions 7 (-> coarse 16), 8 (-> fine 21) are cross-entropies over 15..18 and 19..22; 9 (-> <E>) BCE
    ce7 = -torch.log_softmax(logits[1, 7, 15:19], -1)[16 - 15]
    ce8 = -torch.log_softmax(logits[1, 8, 19:23], -1)[21 - 19]
    _, targets = remaining_set_mask(groups)
    y = torch.zeros(V)
    y[ids[1, 10]] = 1.0
    bce9 = F.binary_cross_entropy_with_logits(logits[1, 9], y, reduction="sum")
    torch.testing.assert_close(out.per_sentence_entity[1], (ce7 + ce8 + bce9) / 3)
    torch.testing.assert_close(out.per_sentence_entity[0], plain.per_sentence_entity[0])  # generation: unchanged
    # a logit outside the field does not change the label loss
    logits2 = logits.clone()
    logits2[1, 7, 3] += 100.0
    out2 = set_objective(logits2, torch.zeros(3, 11, V), ids, levels, groups, labels=_labels())
    torch.testing.assert_close(out2.per_sentence_entity[1], out.per_sentence_entity[1])
    # hits at label positions are the field's arg-max, what constrained decoding picks
    logits3 = torch.full((3, 11, V), -5.0)
    logits3[1, 7, 16], logits3[1, 8, 21], logits3[1, 9, ids[1, 10]] = 1.0, 1.0, 5.0
    logits3[1, 7, 3] = 9.0  # a gene outscores the label: no hit without the softmax, a hit with it
    assert set_objective(logits3, torch.zeros(3, 11, V), ids, levels, groups).hits[1] < 1.0
    assert set_objective(logits3, torch.zeros(3, 11, V), ids, levels, groups, labels=_labels()).hits[1] == 1.0


def test_logit_adjustment_and_smoothing():
    ids, levels, groups = _label_batch()
    logits = torch.zeros(3, 11, V)
    prior = torch.zeros(V)
    prior[15:19] = torch.log(torch.tensor([0.7, 0.1, 0.1, 0.1]))
    base = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups, labels=_labels())
    adjusted = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups, labels=_labels(1.0, prior=prior))
    # the target 16 is a rare class: adding tau * log prior lowers its training probability, raising the loss
    assert adjusted.per_sentence_entity[1] > base.per_sentence_entity[1]
    smooth = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups, labels=_labels(smoothing=0.1))
    torch.testing.assert_close(smooth.per_sentence_entity, base.per_sentence_entity)  # uniform logits: same loss


def test_task_balanced_weights_give_each_task_its_share():
    from scmulan.train import task_balanced_weights

    task = torch.tensor([0, 0, 0, 1])
    w = task_balanced_weights(task, torch.tensor([1.0, 2.0, 1.0]))
    torch.testing.assert_close(w, torch.tensor([1 / 3, 1 / 3, 1 / 3, 2.0]))
    ids, levels, groups = _batch()
    logits = torch.randn(3, 11, V)
    out = set_objective(logits, torch.zeros(3, 11, V), ids, levels, groups, sentence_weight=torch.tensor([2.0, 1, 1]))
    per = out.per_sentence_entity
    torch.testing.assert_close(out.entity, (2 * per[0] + per[1] + per[2]) / 4)


def test_label_targets_from_a_vocabulary():
    from scmulan.train import LabelTargets
    from scmulan.vocab import Vocabulary

    vocab = Vocabulary.build(["A", "B"], {"coarse_cell_type": ["T", "B"], "cell_type": ["CD4", "CD8", "Bn"]})
    coarse, fine = vocab.field_ids("coarse_cell_type"), vocab.field_ids("cell_type")
    seen = np.array([[coarse[0], fine[0]], [coarse[0], fine[1]], [coarse[0], -1], [coarse[1], fine[2]]])
    labels = LabelTargets.from_vocabulary(vocab, seen, tau=1.0)
    assert (labels.field_of[torch.from_numpy(fine)] == labels.field_of[int(fine[0])]).all()
    assert (labels.field_of[torch.from_numpy(vocab.field_ids("gene"))] == -1).all()
    prior = labels.log_prior.exp()
    torch.testing.assert_close(prior[torch.from_numpy(coarse)], torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(prior[torch.from_numpy(fine)], torch.tensor([1 / 3, 1 / 3, 1 / 3]))
