"""The next-entity generation objective: exact values on hand-made sentences, masking, and learning a joint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.sentence import GeneSegments
from scmulan.sentence._genes import descending_within
from scmulan.train._generation_objective import (
    combine,
    generation_positions,
    heads_with_levels,
    next_entity_objective,
)
from scmulan.train._objective import set_objective

V, END, GEN, ANN = 12, 0, 1, 2


def _batch():
    # row 0: generation  <generate> g5(L9) g7(L4) g3(L4) <E>      groups 0 1 1 1 1000
    # row 1: annotation  g5(4) g6(2) <annotate> label10 <E> pad    groups 0 0 0 2 1000 0
    ids = torch.tensor([[GEN, 5, 7, 3, END, 0], [5, 6, ANN, 10, END, 0]])
    levels = torch.tensor([[0, 9, 4, 4, 0, 0], [4, 2, 0, 0, 0, 0]])
    groups = torch.tensor([[0, 1, 1, 1, 1000, 0], [0, 0, 0, 2, 1000, 0]])
    return ids, levels, groups


def test_generation_positions_are_the_gene_segment_and_its_end():
    ids, levels, groups = _batch()
    pos = generation_positions(levels, groups)
    assert pos[0].tolist() == [True, True, True, True, False]  # <generate>, g5, g7 -> genes; g3 -> <E>
    assert not pos[1].any()  # annotation: labels are not generated genes


def test_entity_loss_is_a_softmax_over_the_genes_not_yet_emitted():
    ids, levels, groups = _batch()
    torch.manual_seed(0)
    logits = torch.randn(2, 6, V)
    level_logits = torch.randn(2, 5, 10)
    out = next_entity_objective(logits, level_logits, ids, levels, groups)
    expected = []
    emitted: list[int] = []
    for t, target in enumerate([5, 7, 3, END]):
        row = logits[0, t].clone()
        row[emitted] = -math.inf
        expected.append(torch.logsumexp(row, 0) - row[target])
        if target != END:
            emitted.append(target)
    assert out.per_sentence_entity[0].item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    lv = torch.nn.functional.cross_entropy(level_logits[0, :3], torch.tensor([8, 3, 3]))
    assert out.per_sentence_value[0].item() == pytest.approx(lv.item(), rel=1e-5)
    assert math.isnan(out.per_sentence_entity[1].item())
    # the set objective keeps only the annotation row's label positions
    assert out.other_groups[0].tolist() == [0, 0, 0, 0, 0, 0]
    assert out.other_groups[1].tolist() == groups[1].tolist()


def test_combine_averages_generation_and_label_sentences_with_gradients():
    ids, levels, groups = _batch()
    logits = torch.randn(2, 6, V, requires_grad=True)
    values = torch.randn(2, 6, V, requires_grad=True)
    level_logits = torch.randn(2, 5, 10, requires_grad=True)
    nxt = next_entity_objective(logits, level_logits, ids, levels, groups)
    set_out = set_objective(logits, values, ids, levels, nxt.other_groups)
    out = combine(set_out, nxt)
    assert out.entity.item() == pytest.approx((nxt.per_sentence_entity[0] + set_out.entity).item() / 2, rel=1e-5)
    assert out.value.item() == pytest.approx(nxt.per_sentence_value[0].item(), rel=1e-5)  # no gene targets in set
    out.loss.backward()
    assert level_logits.grad.abs().sum() > 0
    assert logits.grad.abs().sum() > 0


def test_descending_within_orders_only_the_chosen_cells_and_keeps_tie_order():
    seg = GeneSegments(
        ids=np.array([1, 2, 3, 4, 5, 6]),
        levels=np.array([1, 5, 5, 2, 9, 3]),
        offsets=np.array([0, 4, 6]),
        values=np.array([0.1, 0.5, 0.5, 0.2, 0.9, 0.3], dtype=np.float32),
    )
    out = descending_within(seg, np.array([True, False]))
    assert out.ids.tolist() == [2, 3, 4, 1, 5, 6]  # ties 2, 3 keep their order; cell 1 untouched
    assert out.levels.tolist() == [5, 5, 2, 1, 9, 3]


def test_a_tiny_network_learns_a_joint_the_set_objective_cannot_express():
    """Two kinds of cell under one prompt: genes {3, 4} or genes {5, 6}, never mixed. After training, sampling
    from the next-entity model keeps the pairs together, and the stop comes after two genes."""
    torch.manual_seed(0)
    net = CSentenceTransformer(
        TransformerConfig(vocab_size=8, n_layer=2, n_head=2, n_embd=32, generation_objective="next")
    )
    ids = torch.tensor([[GEN, 3, 4, END], [GEN, 5, 6, END]] * 8)
    levels = torch.tensor([[0, 9, 3, 0], [0, 6, 2, 0]] * 8)
    groups = torch.tensor([[0, 1, 1, 1000]] * 16)
    batch = {"ids": ids, "levels": levels, "groups": groups}
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        entity_logits, _, level_logits = heads_with_levels(net, batch)
        nxt = next_entity_objective(entity_logits, level_logits, ids, levels, groups)
        loss = nxt.per_sentence_entity.mean() + nxt.per_sentence_value.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    from scmulan.nn import sample_decode

    candidates = torch.zeros(8, dtype=torch.bool)
    candidates[[END, 3, 4, 5, 6]] = True
    g = torch.Generator().manual_seed(0)
    prompt = torch.full((200, 1), GEN)
    out = sample_decode(net, prompt, torch.zeros_like(prompt), None, 5, candidates=candidates, generator=g)
    cells = [tuple(row[row > 0].tolist()) for row in out.tokens]
    assert out.ended.all()
    pairs = np.array([c in {(3, 4), (5, 6)} for c in cells])
    assert pairs.mean() >= 0.97  # genes come together, two per cell (the set objective draws them independently)
    assert 0.35 < np.mean([c == (3, 4) for c in cells]) < 0.65
    lv = out.levels[torch.as_tensor(pairs)][:, :2]
    first = out.tokens[torch.as_tensor(pairs)][:, 0]
    expected = torch.where((first == 3)[:, None], torch.tensor([9, 3]), torch.tensor([6, 2]))
    assert (lv == expected).float().mean() >= 0.97  # levels sampled from the level head of each gene
