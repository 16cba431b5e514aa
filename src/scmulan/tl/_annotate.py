"""Cell-type annotation: coarse and fine labels, confidence and the annotation embedding."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from anndata import AnnData

from scmulan.tl._utils import as_model, finish, note_overwrite, record, start, target

if TYPE_CHECKING:
    from mudata import MuData

    from scmulan.model import SCMULAN


def annotate(
    adata: AnnData | MuData,
    model: SCMULAN | str | os.PathLike,
    *,
    key_added: str = "scmulan",
    constrained: bool = True,
    legacy: bool = False,
    exclude_unclassified: bool = False,
    restrict_to_cell_types: bool = False,
    use_metadata: bool = True,
    batch_size: int = 64,
    device: str = "auto",
    mod: str = "rna",
    progress: bool = True,
    open_set: bool = False,
    calibrated: bool = True,
    quantize: bool = False,
    prior_correction: float = 0.0,
    marginal: bool = False,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Annotate cells with coarse and fine cell types (dual hierarchical annotation).

    Each cell's c-sentence (expressed genes with their levels, the metadata the query has, then the annotation
    prompt) is decoded greedily in batches with a key/value cache: first a coarse type, then a fine type.

    Parameters
    ----------
    adata
        Log-normalised cells (:func:`scmulan.pp.prepare`); AnnData or MuData (modality ``mod``). The cells need no
        registration and no labels. A warning is issued when they have fewer than half of the model's genes
        (missing genes count as not expressed; ``scmulan.pp.prepare(adata, model)`` matches gene names).
    model
        An :class:`~scmulan.SCMULAN`, a saved model directory, or a pretrained name (``"scmulan-v1"``; loaded once
        per process and reused by later calls).
    key_added
        Name of the result, as in every ``scmulan.tl`` function (Scanpy's meaning): the columns
        ``obs[f"{key_added}_coarse"]``, ``obs[f"{key_added}_fine"]``, ``obs[f"{key_added}_confidence"]``, the
        embedding ``obsm[f"X_{key_added}"]`` (basis ``key_added`` for ``sc.pl.embedding``) and the parameters
        ``uns[key_added]["params"]``.
    constrained
        Step 1 may only emit coarse types and step 2 only fine types. Without the constraint, an output that is not a
        category of its field (e.g. a gene) is labelled ``Unclassified``.
    legacy
        Reproduce the original scMulan exactly (no class constraint, prompt entities banned except the last, any
        non-cell-type output becomes ``Unclassified``; the embedding is the original's ``X_scMulan``).
    exclude_unclassified
        Never predict ``Unclassified`` (constrained mode).
    restrict_to_cell_types
        Only cell types and the end token may be decoded (the original's ``ignore_Idx`` option; for ``legacy=True``
        or ``constrained=False``, which decode freely otherwise).
    use_metadata
        Give the model the metadata columns the query has (those the model was trained with).
    batch_size
        At most this many cells per forward pass (fewer on a CPU when prompts are long).
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``…
    mod
        MuData modality.
    progress
        Show a progress bar.
    open_set
        Label cells unlike every reference type ``"Unknown"`` (both levels): a cell whose expression lies farther
        from its nearest reference cells (in the reference's principal components, see
        :meth:`~scmulan.SCMULAN.calibrate`) than the threshold set on held-out reference cells (recorded in
        ``uns[key_added]["open_set"]``; models calibrated before this score keep the annotation embedding's
        Mahalanobis distance to the reference types). Needs a calibrated model (``model.train`` with validation cells, or
        ``model.calibrate``).
    calibrated
        Write calibrated confidences when the model is calibrated (the probability that the fine label is right).
    quantize
        On the CPU, decode with an int8 copy of the transformer blocks: faster for ``small`` and larger models,
        labels as float32 on over 99 % of cells (see :meth:`scmulan.SCMULAN.annotate` and the performance guide).
    prior_correction
        Remove this multiple of the log frequency of each type among the model's training cells from the label
        logits (post-hoc logit adjustment; ``1`` weighs every type alike, ``0`` keeps the reference's composition
        as a prior). See :meth:`scmulan.SCMULAN.annotate` and the annotation guide for when it helps.
    marginal
        Choose the fine type by its probability summed over every coarse type, then the coarse type given it,
        instead of the most likely coarse type first (see :meth:`scmulan.SCMULAN.annotate`).
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the annotated copy if ``copy=True``. Sets:

    ``adata.obs['{key_added}_coarse']`` : categorical
        Coarse cell type (missing for cells that express none of the model's genes).
    ``adata.obs['{key_added}_fine']`` : categorical
        Fine cell type.
    ``adata.obs['{key_added}_confidence']`` : float
        Probability of the decoded coarse-then-fine path; for a calibrated model, the calibrated probability that
        the fine label is right.
    ``adata.obs['{key_added}_open_set_score']`` : float
        With ``open_set=True``: the open-set score, the distance to the nearest reference cells (``"Unknown"``
        above the threshold).
    ``adata.obsm['X_{key_added}']`` : array
        Final hidden state at the first decoded cell type (the cell embedding).
    ``adata.uns['{key_added}']['params']``
        The parameters, as ``sc.tl.umap`` records them (also kept in ``uns['{key_added}']['annotate']['params']``,
        so they survive a later ``scmulan.tl`` call under the same ``key_added``).
    """
    params = {
        "constrained": constrained,
        "legacy": legacy,
        "exclude_unclassified": exclude_unclassified,
        "restrict_to_cell_types": restrict_to_cell_types,
        "use_metadata": use_metadata,
        "batch_size": batch_size,
        "open_set": open_set,
        "calibrated": calibrated,
        "quantize": quantize,
        "prior_correction": prior_correction,
        "marginal": marginal,
    }
    data, ad = target(adata, mod=mod, copy=copy)
    model = as_model(model)
    started = start("computing cell-type annotation")
    labels, embedding = model.annotate(
        ad,
        constrained=constrained,
        legacy=legacy,
        exclude_unclassified=exclude_unclassified,
        restrict_to_cell_types=restrict_to_cell_types,
        use_metadata=use_metadata,
        batch_size=batch_size,
        device=device,
        return_embedding=True,
        progress=progress,
        open_set=open_set,
        calibrated=calibrated,
        quantize=quantize,
        prior_correction=prior_correction,
        marginal=marginal,
    )
    keys = {"coarse": f"{key_added}_coarse", "fine": f"{key_added}_fine", "confidence": f"{key_added}_confidence"}
    if open_set:
        keys["open_set_score"] = f"{key_added}_open_set_score"
    note_overwrite(ad, key_added, "annotate", obs=list(keys.values()), obsm=[f"X_{key_added}"])
    for column, key in keys.items():
        ad.obs[key] = labels[column].values if column in ("coarse", "fine") else labels[column].to_numpy()
    ad.obsm[f"X_{key_added}"] = embedding
    record(ad, key_added, "annotate", params)
    if open_set:
        cal = model.calibration_
        ad.uns[key_added]["open_set"] = {
            "threshold": cal["threshold"],
            "quantile": cal["quantile"],
            "n_heldout": cal["n_heldout"],
            "n_unknown": int((labels["fine"] == "Unknown").sum()),
            "method": cal.get("open_set_method", "mahalanobis"),
        }
    finish(started, [f"obs['{k}']" for k in keys.values()] + [f"obsm['X_{key_added}']", f"uns['{key_added}']"])
    return data if copy else None
