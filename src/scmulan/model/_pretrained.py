"""One-line access to pretrained models, and resolving the ``model`` argument of the ``tl`` functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scmulan.model._model import SCMULAN


def load_pretrained(
    name: str = "scmulan-v1",
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    progressbar: bool = True,
) -> SCMULAN:
    """Load a pretrained model, downloading its files once (pooch: SHA-256 checked, cached).

    Parameters
    ----------
    name
        ``"scmulan-v1"``: the original scMulan release (24 layers, 20 heads, width 1120, 368.8M parameters; 7 organs,
        109 fine / 29 coarse cell types, 2,000 genes).
    path
        Files downloaded yourself, for offline machines: a directory with ``ckpt_scMulan.pt`` and ``meta_info.pt``,
        or the checkpoint file (``meta_info.pt`` next to it, or downloaded).
    cache_dir
        Download cache (default: ``$SCMULAN_CACHE``, else pooch's per-user cache folder).
    device
        Where to put the weights (``"auto"`` picks a GPU when there is one).
    progressbar
        Show a download progress bar.

    Examples
    --------
    >>> model = scmulan.load_pretrained("scmulan-v1")  # doctest: +SKIP
    >>> model = scmulan.load_pretrained(path="~/Downloads/scmulan/")  # offline  # doctest: +SKIP
    """
    from scmulan.hub import fetch_pretrained
    from scmulan.model._model import SCMULAN

    files = fetch_pretrained(name, path=path, cache_dir_=cache_dir, progressbar=progressbar)
    return SCMULAN.from_legacy_checkpoint(files["checkpoint"], files["meta_info"], device=device)


def resolve_model(model: SCMULAN | str | os.PathLike) -> SCMULAN:
    """An :class:`~scmulan.SCMULAN` from a model, a saved model directory or a pretrained name."""
    from scmulan.hub import PRETRAINED
    from scmulan.model._model import SCMULAN

    if isinstance(model, SCMULAN):
        return model
    if isinstance(model, str | os.PathLike):
        if Path(model).is_dir():
            return SCMULAN.load(model)
        if str(model) in PRETRAINED:
            return load_pretrained(str(model))
        msg = f"`model={os.fspath(model)!r}` is neither a saved model directory nor a pretrained name ({sorted(PRETRAINED)})."
        raise ValueError(msg)
    msg = f"`model` must be an SCMULAN, a saved model directory or a pretrained name, not {type(model).__name__}."
    raise TypeError(msg)
