"""The training plan's parts: optimiser groups, schedule, trunk freezing, clipping, finiteness, random states."""

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.nn.model import Block
from scmulan.train import (
    BlockFSDPStrategy,
    CSentenceTrainingPlan,
    NonFiniteLossError,
    clip_grad_norm,
    latest_finite_checkpoint,
    parameter_groups,
    resolve_strategy,
    warmup_cosine,
)
from scmulan.train._rng import rng_state, set_rng_state


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


# ---------------------------------------------------------------------------------------------- clipping, finiteness


def _with_grads(net, scale=1.0):
    torch.manual_seed(1)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * scale
    return [p.grad.clone() for p in net.parameters()]


def test_clip_grad_norm_returns_the_norm_before_clipping_and_clips_to_max_norm(net):
    grads = _with_grads(net)
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    norm = clip_grad_norm(net.parameters(), 0.5)
    torch.testing.assert_close(norm, expected)
    assert expected > 0.5
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in net.parameters()]))
    torch.testing.assert_close(after, torch.tensor(0.5), rtol=1e-4, atol=0)
    for p, g in zip(net.parameters(), grads, strict=True):  # one common factor: the direction is kept
        torch.testing.assert_close(p.grad, g * (0.5 / expected), rtol=1e-4, atol=1e-7)
    # without a limit: measured, left as they are
    _with_grads(net)
    before = [p.grad.clone() for p in net.parameters()]
    clip_grad_norm(net.parameters(), None)
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), before, strict=True))


class _FakeRoot:
    """Stands for the root FSDP module: records the calls of its ``clip_grad_norm_``."""

    def __init__(self, norm):
        self.norm, self.calls = norm, []

    def clip_grad_norm_(self, max_norm):
        self.calls.append(max_norm)
        return torch.tensor(self.norm)


def _plan_in(net, *, strategy, scaler=None, world_size=1):
    plan = CSentenceTrainingPlan(net)
    plan._trainer = SimpleNamespace(
        strategy=strategy,
        precision_plugin=SimpleNamespace(scaler=scaler),
        world_size=world_size,
        global_step=7,
        current_epoch=1,
    )
    return plan


def test_clipping_under_fsdp_goes_through_the_root_fsdp_module(net):
    strategy = BlockFSDPStrategy()
    root = _FakeRoot(3.0)
    strategy.model = root
    plan = _plan_in(net, strategy=strategy)
    assert plan._sharded()
    assert not plan._fused_adamw()
    grads = _with_grads(net)
    opt = torch.optim.AdamW(net.parameters())
    plan.configure_gradient_clipping(opt, gradient_clip_val=0.25, gradient_clip_algorithm="norm")
    assert root.calls == [0.25]
    # the gradients were left to FSDP: a local clip_grad_norm_ would have changed them
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads, strict=True))
    plan.configure_gradient_clipping(opt, gradient_clip_val=None)  # clipping off: the norm is still checked
    assert root.calls == [0.25, math.inf]


def test_a_non_finite_gradient_norm_stops_before_the_update_unless_a_scaler_handles_it(net):
    strategy = BlockFSDPStrategy()
    strategy.model = _FakeRoot(float("inf"))
    opt = torch.optim.AdamW(net.parameters())
    _with_grads(net)
    with pytest.raises(NonFiniteLossError, match=r"gradient norm became inf with a finite loss at step 7 \(epoch 1\)"):
        _plan_in(net, strategy=strategy).configure_gradient_clipping(opt, gradient_clip_val=1.0)
    # fp16: the gradient scaler skips the step and lowers its scale; not an error
    _plan_in(net, strategy=strategy, scaler=object()).configure_gradient_clipping(opt, gradient_clip_val=1.0)
    # without FSDP the norm is computed here
    net.ln_f.weight.grad[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="gradient norm became nan"):
        _plan_in(net, strategy=SimpleNamespace()).configure_gradient_clipping(opt, gradient_clip_val=None)


def test_fsdp_by_name_wraps_each_block_and_writes_full_checkpoints():
    strategy = resolve_strategy("fsdp")
    assert isinstance(strategy, BlockFSDPStrategy)
    assert strategy._state_dict_type == "full"
    policy = strategy.kwargs["auto_wrap_policy"]
    assert Block in policy._module_classes
    assert resolve_strategy("ddp") == "ddp"
    assert resolve_strategy("fsdp_cpu_offload").cpu_offload.offload_params


# ---------------------------------------------------------------------------------------------- random states


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002 (the global state is what is saved)
    random.seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "c.ckpt")
    expected = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])  # noqa: NPY002
    torch.manual_seed(99)
    np.random.seed(99)  # noqa: NPY002
    random.seed(99)
    set_rng_state(torch.load(tmp_path / "c.ckpt", weights_only=True)["rng"])
    got = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])  # noqa: NPY002
    assert torch.equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_latest_finite_checkpoint_skips_checkpoints_with_non_finite_weights(tmp_path):
    good = {"state_dict": {"w": torch.ones(3), "step": torch.tensor(4)}}
    bad = {"state_dict": {"w": torch.tensor([1.0, float("nan"), 0.0]), "step": torch.tensor(8)}}
    torch.save(good, tmp_path / "step4.ckpt")
    torch.save(bad, tmp_path / "epoch0-step8.ckpt")
    (tmp_path / "step12.ckpt").write_bytes(b"cut short")
    assert latest_finite_checkpoint(tmp_path) == str(tmp_path / "step4.ckpt")
    assert latest_finite_checkpoint(tmp_path / "nothing") is None
