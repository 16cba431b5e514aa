"""Device and precision choice for inference (``scmulan._device``), on CPU with CUDA/MPS availability faked."""

from __future__ import annotations

import contextlib

import pytest
import torch

from scmulan._device import autocast, resolve_device


@pytest.fixture
def fake(monkeypatch):
    """Set what torch reports as available: ``fake(cuda=..., mps=..., n_gpus=..., bf16=...)``."""

    def set_(*, cuda: bool = False, mps: bool = False, n_gpus: int = 1, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus if cuda else 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(fake, cuda, mps, expected):
    fake(cuda=cuda, mps=mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == torch.device(expected)


def test_explicit_devices(fake):
    fake(cuda=True, mps=True, n_gpus=2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(1) == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0, torch.device("cuda")])
def test_cuda_without_a_gpu_is_refused(fake, device):
    fake(cuda=False)
    with pytest.raises(ValueError, match="CUDA is not available; use device='auto' or 'cpu'"):
        resolve_device(device)


def test_a_gpu_index_past_the_last_gpu_is_refused(fake):
    fake(cuda=True, n_gpus=2)
    with pytest.raises(ValueError, match=r"there are 2 CUDA GPU\(s\) \(indices 0..1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["mps", torch.device("mps")])
def test_mps_without_mps_is_refused(fake, device):
    fake(mps=False)
    with pytest.raises(ValueError, match="Apple's MPS is not available; use device='auto' or 'cpu'"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 1.5])
def test_a_name_that_is_no_device_is_refused(device):
    with pytest.raises(ValueError, match="is not a device; use 'auto', 'cpu'"):
        resolve_device(device)


def test_bf16_autocast_only_on_cuda_that_supports_it(fake):
    fake(cuda=True, mps=True, bf16=True)
    cuda = autocast(torch.device("cuda"))
    assert isinstance(cuda, torch.autocast)
    assert cuda.device == "cuda"
    assert cuda.fast_dtype == torch.bfloat16
    for device in ("cpu", "mps"):
        assert isinstance(autocast(torch.device(device)), contextlib.nullcontext)
    # legacy decoding asks for fp32: no autocast even on CUDA
    assert isinstance(autocast(torch.device("cuda"), mixed_precision=False), contextlib.nullcontext)
    fake(cuda=True, bf16=False)  # an older GPU: fp32
    assert isinstance(autocast(torch.device("cuda")), contextlib.nullcontext)


def test_legacy_annotation_runs_without_mixed_precision(monkeypatch, trained, query):
    # annotate(legacy=True) asks the runner for fp32, the default mode for bf16 where available
    from scmulan.model import _annotation

    seen = []
    original = _annotation.decode_cells

    def spy(net, vocab, source, recipe, **kwargs):
        seen.append(not recipe.legacy)  # a legacy recipe decodes in float32
        return original(net, vocab, source, recipe, **kwargs)

    monkeypatch.setattr(_annotation, "decode_cells", spy)
    cells = query[:4].copy()
    trained.annotate(cells, legacy=True, progress=False)
    trained.annotate(cells, progress=False)
    assert seen == [False, True]
