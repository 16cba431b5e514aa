"""Small helpers for AnnData and MuData input shared by ``pp`` and ``tl``.

MuData is imported lazily: these helpers only touch :mod:`mudata` when the object is not an AnnData.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anndata import AnnData

if TYPE_CHECKING:
    from mudata import MuData


def is_mudata(data: object) -> bool:
    """Whether ``data`` is a :class:`~mudata.MuData` (without importing mudata for an AnnData)."""
    if isinstance(data, AnnData):
        return False
    try:
        from mudata import MuData
    except ImportError:  # pragma: no cover - mudata is a dependency
        return False
    return isinstance(data, MuData)


def get_modality(data: AnnData | MuData, mod: str = "rna") -> AnnData:
    """The AnnData to work on: ``data`` itself, or the modality ``mod`` of a MuData.

    Parameters
    ----------
    data
        An AnnData, or a MuData holding the modality ``mod``.
    mod
        Name of the MuData modality; ignored for AnnData input.

    Returns
    -------
    The AnnData object itself (not a copy): writing to it writes into ``data``.
    """
    if isinstance(data, AnnData):
        return data
    if is_mudata(data):
        if mod not in data.mod:
            available = ", ".join(repr(m) for m in data.mod) or "none"
            msg = (
                f"MuData has no modality `mod={mod!r}`; available modalities: {available}. Pass one of them as `mod=`."
            )
            raise ValueError(msg)
        return data.mod[mod]
    msg = f"Expected an AnnData or MuData object, got {type(data).__name__}."
    raise TypeError(msg)


def copy_data(data: AnnData | MuData, *, mod: str = "rna") -> AnnData | MuData:
    """An in-memory copy of ``data``, for ``copy=True``.

    A backed AnnData (``backed="r"``) is loaded into memory with :meth:`~anndata.AnnData.to_memory`
    (the file is left untouched); a backed MuData is refused, as MuData cannot copy it without a new file.

    Parameters
    ----------
    data
        AnnData or MuData.
    mod
        Modality named in the error message for a backed MuData.

    Returns
    -------
    A new object of the same type, sharing no arrays with ``data``.
    """
    if isinstance(data, AnnData):
        return data.to_memory() if data.isbacked else data.copy()
    if getattr(data, "isbacked", False):
        msg = (
            "Cannot copy a backed MuData. Load it into memory first, e.g. "
            f"`mudata.read_h5mu(path)` without `backed`, or pass `mdata.mod[{mod!r}].to_memory()`."
        )
        raise ValueError(msg)
    return data.copy()


def check_not_backed(adata: AnnData, *, where: str) -> None:
    """Raise if ``adata`` is backed and ``where`` would have to modify its matrix in place.

    Parameters
    ----------
    adata
        The AnnData (or MuData modality) to be modified.
    where
        Name of the calling function, used in the message (e.g. ``"scmulan.pp.prepare"``).
    """
    if adata.isbacked:
        msg = (
            f"`{where}` cannot modify a backed AnnData (`backed='r'`) in place. "
            "Pass `copy=True` to get an in-memory result, or load the data first with `adata = adata.to_memory()`."
        )
        raise ValueError(msg)
