"""The random states of a process, saved into and restored from training checkpoints (exact resuming)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The random states of this process (torch CPU and CUDA, NumPy's global one, Python's) as tensors and tuples.

    Only types that ``torch.load(weights_only=True)`` accepts, so checkpoints stay loadable without unpickling code.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the random states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    legacy = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    np.random.set_state(legacy)  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
