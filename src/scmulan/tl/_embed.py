"""Cell embeddings from the transformer's final hidden states."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from anndata import AnnData

from scmulan._warnings import warn
from scmulan.tl._utils import as_model, finish, note_overwrite, record, start, target

if TYPE_CHECKING:
    from mudata import MuData

    from scmulan.model import SCMULAN


def embed(
    adata: AnnData | MuData,
    model: SCMULAN | str | os.PathLike,
    *,
    pooling: Literal["annotation", "mean"] = "annotation",
    key_added: str = "scmulan",
    legacy: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    mod: str = "rna",
    progress: bool = True,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Embed cells with the model (for neighbours, UMAP, clustering, integration).

    Parameters
    ----------
    adata
        Log-normalised cells; AnnData or MuData (modality ``mod``). Fewer than half of the model's genes: a
        warning (see :func:`scmulan.tl.annotate`).
    model
        An :class:`~scmulan.SCMULAN`, a saved model directory, or a pretrained name (loaded once per process).
    pooling
        ``"annotation"``: the final hidden state at the first decoded cell type, as the original scMulan's
        ``X_scMulan`` (it is conditioned on the model's own coarse call); ``"mean"``: the mean final hidden state over
        the cell's gene positions (label-free; NaN, with a warning, for cells that express none of the model's
        genes).
    key_added
        Name of the result, as in every ``scmulan.tl`` function: the embedding goes to ``obsm[f"X_{key_added}"]``
        (the basis name of ``sc.pl.embedding``) and the parameters to ``uns[key_added]["params"]``. The default
        matches the embedding :func:`scmulan.tl.annotate` writes. Deprecated: an ``obsm`` key starting with ``X_``
        (the old meaning) still writes there, with a :class:`FutureWarning`.
    legacy
        With ``pooling="annotation"``, decode exactly as the original scMulan.
    batch_size, device, mod, progress, copy
        As in :func:`scmulan.tl.annotate`.

    Returns
    -------
    ``None``, or the copy if ``copy=True``. Sets:

    ``adata.obsm[f"X_{key_added}"]`` : array
        float32, cells × model width.
    ``adata.uns[key_added]["params"]``
        The parameters (also kept in ``uns[key_added]["embed"]["params"]``).
    """
    key_added = _basis(key_added)
    data, ad = target(adata, mod=mod, copy=copy)
    model = as_model(model)
    started = start(f"computing scmulan embedding ({pooling} pooling)")
    embedding = model.get_latent_representation(
        ad, pooling=pooling, legacy=legacy, batch_size=batch_size, device=device, progress=progress
    )
    note_overwrite(ad, key_added, "embed", obsm=[f"X_{key_added}"])
    ad.obsm[f"X_{key_added}"] = embedding
    record(ad, key_added, "embed", {"pooling": pooling, "legacy": legacy, "batch_size": batch_size})
    finish(started, [f"obsm['X_{key_added}']", f"uns['{key_added}']"])
    return data if copy else None


def _basis(key_added: str) -> str:
    """The name of the result; an ``obsm`` key (``X_…``, its meaning in 0.1) is deprecated and mapped to it."""
    if not key_added.startswith("X_"):
        return key_added
    name = key_added.removeprefix("X_")
    warn(
        f"`key_added` of `scmulan.tl.embed` is now the name of the result, as in the other `scmulan.tl` functions: "
        f"pass key_added={name!r} (writes obsm['X_{name}'] and uns['{name}']). Passing the obsm key {key_added!r} is "
        "deprecated and will write obsm['X_X_…'] in a future release.",
        FutureWarning,
    )
    return name
