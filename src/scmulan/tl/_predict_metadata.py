"""Metadata prediction (organ, region, …) with the metadata prompt."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from anndata import AnnData

from scmulan.tl._utils import as_model, finish, note_overwrite, record, start, target

if TYPE_CHECKING:
    from mudata import MuData

    from scmulan.model import SCMULAN


def predict_metadata(
    adata: AnnData | MuData,
    model: SCMULAN | str | os.PathLike,
    fields: Sequence[str] = ("organ", "region"),
    *,
    key_added: str = "scmulan",
    use_metadata: bool = True,
    batch_size: int = 64,
    device: str = "auto",
    mod: str = "rna",
    progress: bool = True,
    quantize: bool = False,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Predict metadata fields of every cell (e.g. organ and region).

    Fields are decoded greedily in the model's metadata order, each step restricted to its field's categories.

    Parameters
    ----------
    adata
        Log-normalised cells; AnnData or MuData (modality ``mod``). Fewer than half of the model's genes: a
        warning (see :func:`scmulan.tl.annotate`).
    model
        An :class:`~scmulan.SCMULAN`, a saved model directory, or a pretrained name (loaded once per process).
    fields
        Fields to predict; the model lists what it can predict in ``model.metadata_fields_``.
    key_added
        Name of the result, as in every ``scmulan.tl`` function: the columns ``obs[f"{key_added}_{field}"]`` and
        ``obs[f"{key_added}_{field}_confidence"]`` and the parameters ``uns[key_added]["params"]``.
    use_metadata
        Give the model the other metadata columns the query has.
    batch_size, device, mod, progress, quantize, copy
        As in :func:`scmulan.tl.annotate`.

    Returns
    -------
    ``None``, or the copy if ``copy=True``. Sets, for every field, ``adata.obs['{key_added}_{field}']``
    (categorical) and ``adata.obs['{key_added}_{field}_confidence']`` (float), and ``adata.uns['{key_added}']['params']``
    (also kept in ``uns['{key_added}']['predict_metadata']['params']``).
    """
    fields = [fields] if isinstance(fields, str) else list(fields)
    data, ad = target(adata, mod=mod, copy=copy)
    model = as_model(model)
    started = start(f"predicting {', '.join(fields)}")
    table = model.predict_metadata(
        ad,
        fields,
        use_metadata=use_metadata,
        batch_size=batch_size,
        device=device,
        progress=progress,
        quantize=quantize,
    )
    note_overwrite(ad, key_added, "predict_metadata", obs=[f"{key_added}_{c}" for c in table.columns])
    added = []
    for column in table.columns:
        key = f"{key_added}_{column}"
        ad.obs[key] = table[column].values
        added.append(f"obs['{key}']")
    record(
        ad,
        key_added,
        "predict_metadata",
        {"fields": fields, "use_metadata": use_metadata, "batch_size": batch_size, "quantize": quantize},
    )
    finish(started, added)
    return data if copy else None
