"""One-line access to pretrained models, and resolving the ``model`` argument of the ``tl`` functions."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from scmulan.model._model import SCMULAN


def load_pretrained(
    name: str = "scmulan-v1",
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progressbar: bool = True,
) -> SCMULAN:
    """Load a pretrained model, downloading its files once (pooch: SHA-256 checked, cached).

    The same as :meth:`SCMULAN.from_pretrained <scmulan.SCMULAN.from_pretrained>`; every call returns a new model.

    Parameters
    ----------
    name, path, cache_dir, device, progressbar
        As in :meth:`SCMULAN.from_pretrained <scmulan.SCMULAN.from_pretrained>`: the release (``"scmulan-v1"``,
        the original scMulan), files downloaded yourself for offline machines, the download cache, where to put the
        weights, and a download progress bar.

    Examples
    --------
    >>> model = scmulan.load_pretrained("scmulan-v1")  # doctest: +SKIP
    >>> model = scmulan.load_pretrained(path="~/Downloads/scmulan/")  # offline  # doctest: +SKIP
    """
    from scmulan.model._model import SCMULAN

    return SCMULAN.from_pretrained(name, path=path, cache_dir=cache_dir, device=device, progressbar=progressbar)


# Pretrained models the `tl` functions were given by name, kept for the process so that a name costs the download
# check (hashing ~1.5 GB) and the conversion once: (name, cache folder, registry entry) -> model, most recent last.
_RESOLVED: OrderedDict[tuple, SCMULAN] = OrderedDict()
_RESOLVED_MAX = 2


def _pretrained_by_name(name: str) -> SCMULAN:
    """:func:`load_pretrained` with the default cache, loaded once per process for each cache folder."""
    from scmulan.hub import PRETRAINED, cache_dir

    key = (name, os.fspath(cache_dir()), tuple(sorted(PRETRAINED[name].items())))
    if key in _RESOLVED:
        _RESOLVED.move_to_end(key)
        return _RESOLVED[key]
    model = load_pretrained(name)
    _RESOLVED[key] = model
    while len(_RESOLVED) > _RESOLVED_MAX:
        _RESOLVED.popitem(last=False)
    return model


def clear_pretrained_cache() -> None:
    """Forget the pretrained models loaded by name for the ``tl`` functions, freeing their memory.

    ``scmulan.tl.annotate(adata, "scmulan-v1")`` and the other tools load a pretrained model once per process
    and reuse it; call this when it is no longer needed, or after replacing the files in the download cache.
    Models returned by :func:`load_pretrained` are not affected (they belong to the caller).
    """
    _RESOLVED.clear()


def resolve_model(model: SCMULAN | str | os.PathLike) -> SCMULAN:
    """An :class:`~scmulan.SCMULAN` from a model, a saved model directory or a pretrained name.

    A pretrained name is loaded once per process (and per download cache folder): later calls reuse the same
    model object, which the ``tl`` functions only read; :func:`~scmulan.clear_pretrained_cache` frees it.
    """
    from scmulan.hub import PRETRAINED
    from scmulan.model._model import SCMULAN

    if isinstance(model, SCMULAN):
        return model
    if isinstance(model, str | os.PathLike):
        if Path(model).is_dir():
            return SCMULAN.load(model)
        if str(model) in PRETRAINED:
            return _pretrained_by_name(str(model))
        msg = f"`model={os.fspath(model)!r}` is neither a saved model directory nor a pretrained name ({sorted(PRETRAINED)})."
        raise ValueError(msg)
    msg = f"`model` must be an SCMULAN, a saved model directory or a pretrained name, not {type(model).__name__}."
    raise TypeError(msg)
