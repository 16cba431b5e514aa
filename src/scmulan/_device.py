"""Choosing the compute device and precision for inference."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | int | torch.device = "auto") -> torch.device:
    """``"auto"``: the first CUDA GPU, else Apple's MPS, else the CPU; anything else as :class:`torch.device`.

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a GPU index or a :class:`torch.device`.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if isinstance(device, int):
        return torch.device("cuda", device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"`device={device!r}` was requested but CUDA is not available; use device='auto' or 'cpu'."
        raise ValueError(msg)
    return dev


def autocast(device: torch.device, *, mixed_precision: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it; a no-op elsewhere (fp32 on CPU and MPS)."""
    import torch

    if mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
