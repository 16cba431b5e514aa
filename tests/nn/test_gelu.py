"""tanh_gelu: torch's tanh-GELU everywhere; at CPU inference computed as x * sigmoid(2u), the same function.

linear_tanh_gelu: a linear layer then tanh_gelu; at float32 CPU inference fused into oneDNN's matrix product.
"""

from __future__ import annotations

import nn_helpers as H  # tests/nn/_helpers.py, loaded by tests/nn/conftest.py
import pytest
import torch
import torch.nn.functional as F

from scmulan.nn import model as network
from scmulan.nn.model import TanhGELU, linear_tanh_gelu, tanh_gelu

_EDGES = [0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4, 3e38, -3e38, float("inf"), float("-inf"), float("nan")]


def _inputs(dtype: torch.dtype) -> torch.Tensor:
    grid = torch.linspace(-30, 30, 200_001, dtype=torch.float64)
    return torch.cat([grid, torch.tensor(_EDGES, dtype=torch.float64)]).to(dtype)


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_inference_on_the_cpu_gives_torchs_tanh_gelu_within_rounding(dtype, rel):
    x = _inputs(dtype)
    with torch.inference_mode():
        ours, torchs = tanh_gelu(x), F.gelu(x, approximate="tanh")
    assert torch.equal(ours.isnan(), torchs.isnan())  # only the NaN and -inf inputs (torch gives NaN for -inf too)
    finite = x.isfinite()
    diff = (ours[finite].double() - torchs[finite].double()).abs()
    bound = rel * x[finite].double().abs().clamp(min=1.0)
    assert bool((diff <= bound).all()), float((diff / bound).max())
    assert torch.equal(ours[x == float("inf")], x[x == float("inf")])


def test_the_input_is_left_as_it_was():
    x = torch.randn(64, 32)
    before = x.clone()
    with torch.no_grad():
        tanh_gelu(x)
    assert torch.equal(x, before)


def test_training_bf16_and_autograd_use_torchs_kernel_exactly():
    x = torch.randn(64, 32, requires_grad=True)
    y = tanh_gelu(x)
    assert torch.equal(y, F.gelu(x, approximate="tanh"))
    y.sum().backward()  # differentiable as before
    expected = torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)[0]
    assert torch.equal(x.grad, expected)
    b = torch.randn(64, 32).bfloat16()
    with torch.inference_mode():
        assert torch.equal(tanh_gelu(b), F.gelu(b, approximate="tanh"))


def test_the_module_has_no_state_and_applies_the_function():
    module = TanhGELU()
    assert list(module.state_dict()) == []
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.equal(module(x), tanh_gelu(x))


def test_a_network_gives_the_same_outputs_at_inference_as_with_autograd():
    net = H.build_net(40)  # eval mode, weights that require grad
    ids, levels = H.random_cells(1, 40, min_len=12, seed=0)[0]
    with_autograd = net(ids[None], levels[None])  # torch's kernel
    with torch.inference_mode():
        at_inference = net(ids[None], levels[None])  # x * sigmoid(2u)
    assert not torch.equal(at_inference, with_autograd.detach())  # the other path was taken
    assert torch.allclose(at_inference, with_autograd.detach(), atol=1e-5, rtol=1e-5)


def _unfused(linear: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(linear(x), approximate="tanh")


@pytest.mark.parametrize("bias", [True, False])
def test_linear_then_gelu_at_inference_is_the_unfused_function_within_rounding(bias):
    linear = torch.nn.Linear(64, 256, bias=bias)
    x = 3 * torch.randn(2, 33, 64)
    with torch.inference_mode():
        ours, expected = linear_tanh_gelu(linear, x), _unfused(linear, x)
        strided = linear_tanh_gelu(linear, x.transpose(0, 1))  # a non-contiguous input
        empty = linear_tanh_gelu(linear, x[:, :0])
    assert ours.shape == expected.shape == (2, 33, 256)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(strided, expected.transpose(0, 1), atol=1e-5, rtol=1e-5)
    assert empty.shape == (2, 0, 256)


def test_the_fused_kernel_is_used_at_cpu_inference_where_torch_has_it(monkeypatch):
    if not network._fused_linear_gelu_available():
        pytest.skip("this torch has no oneDNN fused linear + GELU (torch.ops.mkldnn._linear_pointwise)")

    calls = []
    monkeypatch.setattr(network, "tanh_gelu", lambda x: calls.append(x) or F.gelu(x, approximate="tanh"))
    linear = torch.nn.Linear(16, 32)
    x = torch.randn(4, 16)
    with torch.no_grad():
        fused = linear_tanh_gelu(linear, x)  # the fused kernel: tanh_gelu is not called
        assert calls == []
        assert torch.allclose(fused, _unfused(linear, x), atol=1e-5, rtol=1e-5)
        linear_tanh_gelu(torch.nn.Linear(16, 32).double(), x.double())  # float64: the unfused path calls it
    assert len(calls) == 1


def test_without_the_fused_kernel_or_with_autograd_the_unfused_path_runs(monkeypatch):
    linear = torch.nn.Linear(16, 32)
    x = torch.randn(4, 16, requires_grad=True)
    y = linear_tanh_gelu(linear, x)  # autograd: torch's kernel, exactly, and differentiable
    assert torch.equal(y, _unfused(linear, x))
    y.sum().backward()
    assert x.grad is not None
    assert linear.weight.grad is not None
    monkeypatch.setattr(network, "_FUSED_LINEAR_GELU", False)  # a torch without the kernel
    with torch.no_grad():
        assert torch.equal(linear_tanh_gelu(linear, x), tanh_gelu(linear(x)))
    with torch.no_grad():  # float64 and quantised layers never take the fused kernel
        monkeypatch.setattr(network, "_FUSED_LINEAR_GELU", None)
        double = linear.double()
        assert torch.equal(linear_tanh_gelu(double, x.double()), tanh_gelu(double(x.double())))


def test_a_failing_probe_leaves_the_unfused_path(monkeypatch):
    class NoKernel:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(network, "_FUSED_LINEAR_GELU", None)
    monkeypatch.setattr(torch.ops, "mkldnn", NoKernel())
    assert network._fused_linear_gelu_available() is False
    linear = torch.nn.Linear(8, 8)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(linear_tanh_gelu(linear, x), tanh_gelu(linear(x)))
