"""Files of a saved :class:`~scmulan.SCMULAN`: the scvi-tools ``model.pt`` layout, safetensors weights, vocabulary JSON.

``dir/model.pt``
    ``torch.save`` of plain containers only (``attr_dict`` with the init parameters, registry and settings,
    ``var_names``, ``model_name``, ``scmulan_version``): it loads with ``torch.load(weights_only=True)``.
``dir/model.safetensors``
    The network's weights, plus extra arrays (the de-binning table) under ``scmulan.``-prefixed names.
``dir/vocab.json``
    The :class:`~scmulan.Vocabulary`.
``dir/adata.h5ad``
    Optional copy of the training data (``save_anndata=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scmulan._plain import plain

MODEL_FILE, WEIGHTS_FILE, VOCAB_FILE, ADATA_FILE = "model.pt", "model.safetensors", "vocab.json", "adata.h5ad"
EXTRA_PREFIX = "scmulan."


def write(
    dir_path: str | os.PathLike,
    *,
    attrs: dict[str, Any],
    var_names: list[str],
    state_dict: dict[str, torch.Tensor],
    extra: dict[str, np.ndarray],
    vocab_json: str,
    overwrite: bool,
) -> Path:
    """Write the three files; refuses to overwrite an existing model unless ``overwrite``."""
    from safetensors.torch import save_file

    from scmulan._version import __version__

    path = Path(dir_path)
    if path.exists() and (path / MODEL_FILE).exists() and not overwrite:
        msg = f"{path} already holds a saved model; pass `overwrite=True` to replace it."
        raise ValueError(msg)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tensors.update({EXTRA_PREFIX + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extra.items()})
    save_file(tensors, path / WEIGHTS_FILE, metadata={"format": "pt", "library": "scmulan"})
    (path / VOCAB_FILE).write_text(vocab_json)
    torch.save(
        {
            "attr_dict": plain(attrs),
            "var_names": list(var_names),
            "model_name": "SCMULAN",
            "scmulan_version": __version__,
        },
        path / MODEL_FILE,
    )
    return path


def read(dir_path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, np.ndarray], str]:
    """Read a saved model: ``(model.pt contents, weights, extra arrays, vocabulary JSON)``; never unpickles code."""
    from safetensors.torch import load_file

    path = Path(dir_path)
    missing = [f for f in (MODEL_FILE, WEIGHTS_FILE, VOCAB_FILE) if not (path / f).exists()]
    if missing:
        msg = f"{path} is not a saved scmulan model: missing {missing}."
        raise ValueError(msg)
    meta = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
    tensors = load_file(path / WEIGHTS_FILE)
    extra = {k[len(EXTRA_PREFIX) :]: v.numpy() for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    return meta, weights, extra, (path / VOCAB_FILE).read_text()
