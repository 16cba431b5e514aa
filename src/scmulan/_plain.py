"""Plain Python containers from NumPy/pandas values: what ``torch.load(weights_only=True)`` and h5ad ``uns`` hold."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plain"]


def plain(obj: Any) -> Any:
    """Recursively turn NumPy/pandas values into Python containers and scalars (``weights_only``-loadable)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if hasattr(obj, "to_dict") and callable(obj.to_dict):  # dataclasses with a to_dict, pandas objects
        return plain(obj.to_dict())
    return str(obj)
