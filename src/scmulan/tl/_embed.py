"""Cell embeddings from the transformer's final hidden states."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from anndata import AnnData

from scmulan.tl._utils import as_model, finish, record, start, target

if TYPE_CHECKING:
    from mudata import MuData

    from scmulan.model import SCMULAN


def embed(
    adata: AnnData | MuData,
    model: SCMULAN | str | os.PathLike,
    *,
    pooling: Literal["annotation", "mean"] = "annotation",
    key_added: str = "X_scmulan",
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
        ``obsm`` key written.
    legacy
        With ``pooling="annotation"``, decode exactly as the original scMulan.
    batch_size, device, mod, progress, copy
        As in :func:`scmulan.tl.annotate`.

    Returns
    -------
    ``None``, or the copy if ``copy=True``. Sets ``adata.obsm[key_added]`` (float32, cells × model width) and
    ``adata.uns[key_added without 'X_']['embed']['params']``.
    """
    data, ad = target(adata, mod=mod, copy=copy)
    model = as_model(model)
    started = start(f"computing scmulan embedding ({pooling} pooling)")
    ad.obsm[key_added] = model.get_latent_representation(
        ad, pooling=pooling, legacy=legacy, batch_size=batch_size, device=device, progress=progress
    )
    record(ad, key_added.removeprefix("X_"), "embed", {"pooling": pooling, "legacy": legacy, "batch_size": batch_size})
    finish(started, [f"obsm['{key_added}']"])
    return data if copy else None
