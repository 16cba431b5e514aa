"""Optimiser groups, the learning-rate schedule and trunk freezing of the training plan."""

import math

import pytest
import torch

from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.train import CSentenceTrainingPlan, parameter_groups, warmup_cosine


@pytest.fixture
def net():
    return CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=50, bias=True))


def test_weight_decay_only_on_linear_matrices(net):
    decay, no_decay = parameter_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in net.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert decayed.isdisjoint(not_decayed)
    assert decayed | not_decayed == set(names.values())  # every parameter exactly once
    assert all(n.endswith(".weight") for n in decayed)
    assert "entity_embedding.weight" in not_decayed
    assert "value_embedding.weight" in not_decayed
    assert any("ln_" in n for n in not_decayed)
    assert all(not n.endswith(".bias") for n in decayed)
    assert "entity_head.weight" in decayed
    assert "blocks.0.attn.qkv.weight" in decayed


def test_warmup_then_cosine():
    f = [warmup_cosine(s, 10, 100, 0.1) for s in range(101)]
    assert f[0] == pytest.approx(0.1)
    assert f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:9], f[1:10], strict=True))  # warm-up rises
    assert all(a >= b for a, b in zip(f[10:-1], f[11:], strict=True))  # then decays
    assert f[100] == pytest.approx(0.1)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_freeze_trunk_keeps_blocks_fixed(net):
    plan = CSentenceTrainingPlan(net, freeze_trunk=True)
    for name, p in plan.net.named_parameters():
        trunk = name.startswith(("blocks.", "ln_f."))
        assert p.requires_grad != trunk, name
    groups = parameter_groups(plan.net, 0.1)
    n_trainable = sum(p.numel() for g in groups for p in g["params"])
    assert n_trainable == sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_head_bias_starts_at_prior_log_odds():
    net = CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=101))
    torch.testing.assert_close(net.entity_head.bias, torch.full((101,), -math.log(100)))
    legacy = TransformerConfig.from_preset("scmulan-v1")
    assert not legacy.head_bias
    assert legacy.n_params() == 368_800_320
