"""Finding checkpoints to resume from: the newest one, and the newest one whose weights are all finite."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

__all__ = ["latest_checkpoint", "latest_finite_checkpoint"]

_STEP = re.compile(r"step(\d+)\.ckpt$")


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint (highest optimiser step in its name) in ``checkpoint_dir``, if any."""
    found = [(int(m.group(1)), str(p)) for p in Path(checkpoint_dir).glob("*.ckpt") if (m := _STEP.search(p.name))]
    return max(found)[1] if found else None


def latest_finite_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint in ``checkpoint_dir`` whose weights are all finite (read back to make sure), if any."""
    found = [(int(m.group(1)), p) for p in Path(checkpoint_dir).glob("*.ckpt") if (m := _STEP.search(p.name))]
    for _, path in sorted(found, reverse=True):
        try:
            saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)["state_dict"]
        except (OSError, RuntimeError, KeyError, pickle.UnpicklingError):  # unreadable (e.g. cut short): not good
            continue
        if all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point()):
            return str(path)
    return None
