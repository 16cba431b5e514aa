"""What every ``tl`` function shares: the object to write to, the model argument, the parameter record, logging."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from anndata import AnnData

from scmulan._anndata import copy_data, get_modality

if TYPE_CHECKING:
    from mudata import MuData

    from scmulan.model import SCMULAN

logger = logging.getLogger("scmulan.tl")


def target(data: AnnData | MuData, *, mod: str, copy: bool) -> tuple[AnnData | MuData, AnnData]:
    """``(object to return, AnnData to write into)``: a copy if asked, the RNA modality of a MuData."""
    if copy:
        data = copy_data(data, mod=mod)
    adata = get_modality(data, mod)
    if adata.n_obs == 0:
        msg = "The AnnData has no cells."
        raise ValueError(msg)
    return data, adata


def as_model(model: SCMULAN | str | os.PathLike) -> SCMULAN:
    """An :class:`~scmulan.SCMULAN` from a model, a saved directory or a pretrained name."""
    from scmulan.model import resolve_model

    return resolve_model(model)


def record(adata: AnnData, key: str, function: str, params: dict[str, Any]) -> None:
    """Store ``params`` in ``adata.uns[key]["params"]`` (as ``sc.tl.umap``) and ``adata.uns[key][function]["params"]``.

    ``uns[key]["params"]`` holds the latest call that wrote under ``key``; the per-function copy keeps, e.g., the
    annotation's parameters after a later ``predict_metadata`` under the same key. ``None`` values are left out (h5ad
    cannot hold them).
    """
    from scmulan._plain import plain

    kept = {k: v for k, v in plain(params).items() if v is not None}
    section = dict(adata.uns.get(key, {}))
    section["params"] = kept
    section[function] = {"params": dict(kept)}
    adata.uns[key] = section


def start(message: str) -> float:
    """Log the start of a computation; returns the start time for :func:`finish`."""
    logger.info(message)
    return time.perf_counter()


def finish(started: float, added: list[str]) -> None:
    """Log the end of a computation with its duration and the keys it added."""
    logger.info("    finished (%.2fs)", time.perf_counter() - started)
    logger.debug("added\n    %s", "\n    ".join(added))
