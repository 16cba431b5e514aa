"""Choosing the compute device and precision for inference."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | int | torch.device = "auto") -> torch.device:
    """The device to run on: ``"auto"`` picks the first CUDA GPU, else Apple's MPS, else the CPU.

    Anything else becomes a :class:`torch.device`, checked to be available (a :class:`ValueError` names the fix).

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a GPU index or a :class:`torch.device`.
    """
    import torch

    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        msg = f"`device={device!r}` is not a device; use 'auto', 'cpu', 'cuda', 'cuda:1', 'mps' or a GPU index."
        raise ValueError(msg) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"`device={device!r}` was requested but CUDA is not available; use device='auto' or 'cpu'."
        raise ValueError(msg)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        msg = (
            f"`device={device!r}` was requested but there are {torch.cuda.device_count()} CUDA GPU(s) "
            f"(indices 0..{torch.cuda.device_count() - 1}); use device='auto' or an existing index."
        )
        raise ValueError(msg)
    if dev.type == "mps" and not _mps_available():
        msg = f"`device={device!r}` was requested but Apple's MPS is not available; use device='auto' or 'cpu'."
        raise ValueError(msg)
    return dev


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def autocast(device: torch.device, *, mixed_precision: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it; a no-op elsewhere.

    Computation stays fp32 on CPU and MPS, and whenever ``mixed_precision=False`` (as legacy decoding asks).

    Parameters
    ----------
    device
        The device the computation runs on.
    mixed_precision
        Allow bf16 (``False``: always fp32).
    """
    import torch

    if mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
