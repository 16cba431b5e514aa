"""What every ``tl`` function shares: the object to write to, the model argument, the parameter record, logging."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
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


#: The functions whose record in ``uns[key_added]`` marks the results under ``key_added`` as scmulan's own.
TL_FUNCTIONS = ("annotate", "embed", "predict_metadata", "smooth_labels")


def note_overwrite(
    adata: AnnData, key: str, function: str, *, obs: Sequence[str] = (), obsm: Sequence[str] = ()
) -> None:
    """Say that existing result columns are about to be replaced: a warning for the user's own, a log note for ours.

    The package's one rule for overwriting: results a ``scmulan.tl`` function wrote under ``key_added`` are
    replaced with an INFO log line, as Scanpy replaces its own results; columns or ``obsm`` keys that exist
    without such a record (made by the user or another tool) are replaced with a :class:`UserWarning` naming
    them and how to keep them (another ``key_added=``). An ``obs`` column counts as scmulan's when
    ``uns[key_added][function]`` exists (the same function wrote under this key); ``obsm['X_<key_added>']`` when
    ``annotate`` or ``embed`` wrote under this key (both write it).

    Parameters
    ----------
    adata
        The AnnData about to be written.
    key
        ``key_added`` of the call: ``uns[key]`` holds the records.
    function
        The calling ``scmulan.tl`` function, e.g. ``"annotate"``.
    obs, obsm
        The keys the call is about to write.
    """
    section = adata.uns.get(key)
    recorded = set(section) & set(TL_FUNCTIONS) if isinstance(section, Mapping) else set()
    ours_obs = function in recorded
    ours_obsm = bool(recorded & {"annotate", "embed"})
    existing = [(f"obs[{k!r}]", ours_obs) for k in obs if k in adata.obs]
    existing += [(f"obsm[{k!r}]", ours_obsm) for k in obsm if k in adata.obsm]
    ours = [name for name, own in existing if own]
    theirs = [name for name, own in existing if not own]
    if ours:
        logger.info("    replacing %s (written by an earlier scmulan.tl call)", ", ".join(ours))
    if theirs:
        from scmulan._warnings import warn

        warn(
            f"`scmulan.tl.{function}` replaces {', '.join(theirs)}, which scmulan did not write (no record in "
            f"`uns[{key!r}]`). Pass another `key_added=` to keep them."
        )


def start(message: str) -> float:
    """Log the start of a computation; returns the start time for :func:`finish`."""
    logger.info(message)
    return time.perf_counter()


def finish(started: float, added: list[str]) -> None:
    """Log the end of a computation with its duration and the keys it added."""
    logger.info("    finished (%.2fs)", time.perf_counter() - started)
    logger.debug("added\n    %s", "\n    ".join(added))
