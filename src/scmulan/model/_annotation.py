"""Annotation, metadata prediction and embeddings: greedy decoding of label prompts (recipes of ``SCMULAN``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scmulan._device import resolve_device
from scmulan._warnings import warn
from scmulan.model._gene_counts import cells_per_token
from scmulan.model._inference import DecodingRecipe, decode_cells
from scmulan.model._parts import UNCLASSIFIED, ModelParts
from scmulan.model._query import query_source


def annotate(
    parts: ModelParts,
    adata: AnnData,
    *,
    constrained: bool = True,
    legacy: bool = False,
    exclude_unclassified: bool = False,
    restrict_to_cell_types: bool = False,
    use_metadata: bool = True,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    return_embedding: bool = False,
    progress: bool = True,
    calibrated: bool = True,
    open_set: bool = False,
    quantize: bool = False,
    prior_correction: float = 0.0,
    marginal: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
    """Coarse and fine cell types of every cell, with confidences.

    Parameters
    ----------
    adata
        Log-normalised cells (any AnnData or MuData; it need not be registered or labelled), or cells where they
        are stored, read a chunk at a time without loading the matrix (raw counts normalised as they are read):
        an ``.h5ad`` path, a TileDB-SOMA ``ExperimentAxisQuery``, ``Experiment`` or experiment URI (results
        indexed by ``soma_joinid``), an annbatch collection, or a :class:`~scmulan.sentence.CellSource` (its
        ``obs_keys`` are the prompt's context). When they have fewer than half of the model's genes, a warning
        gives the counts.
    constrained
        Step 1 may only emit coarse-type entities, step 2 only fine-type entities. Without the constraint any
        entity may be decoded, and a step whose output is not a category of its field (a gene, a metadata token,
        ``<E>``…) is labelled ``"Unclassified"`` (its confidence is still the probability of what was decoded).
    legacy
        Decode exactly as the original scMulan: prompt entities banned except the last, no class constraint,
        3 steps, a non-cell-type output becomes ``"Unclassified"``; the embedding is the original's ``X_scMulan``.
    exclude_unclassified
        Never emit ``Unclassified`` (constrained mode).
    restrict_to_cell_types
        Only cell-type entities (coarse and fine) and ``<E>`` may be decoded: the original's ``ignore_Idx``
        option, for legacy or unconstrained decoding (constrained decoding already implies it).
    use_metadata
        Put the metadata the query has (the model's registered ``obs`` columns) in the prompt.
    batch_size, device
        At most this many cells per forward pass (on a CPU fewer when their prompts are long: smaller batches run
        faster there, see the performance guide); ``"auto"`` picks CUDA, MPS or CPU (bf16 autocast on CUDA).
    return_embedding
        Also return the hidden state at the first decoded cell type (``(n_cells, width)``).
    progress
        Show a progress bar.
    calibrated
        When the model was calibrated (:meth:`calibrate`; ``train`` does it with its validation cells), report
        calibrated ``confidence`` and ``coarse_confidence`` (the raw path probability is kept as
        ``raw_confidence``). Legacy decoding is never calibrated.
    open_set
        Label cells unlike every reference cell ``"Unknown"`` (coarse and fine): their mean distance to the 10
        nearest reference cells in the reference's expression space, above the threshold set on held-out reference
        cells (needs a calibrated model; adds ``open_set_score``; models calibrated before this score use the
        annotation embedding's distance to the reference types).
    quantize
        On the CPU, decode with an int8 copy of the transformer blocks (dynamic quantisation of their linear
        layers; the heads stay float32): 1.5x faster at the `base` size, 1.0-1.2x for `tiny` and `small`;
        labels agreed with float32 on over 99 % of the cells of trained networks (see the performance guide).
    prior_correction
        Remove ``prior_correction`` times the log frequency of each cell type among the training cells from the
        label logits before choosing (post-hoc logit adjustment, Menon et al., ICLR 2021): ``1`` targets balanced
        accuracy (every type counts alike, as macro-F1 does), ``0`` keeps the reference's type frequencies as a
        prior (the query is assumed to have the reference's composition). Needs the training cells per type, which
        models trained by scmulan keep (the imported original checkpoint has none); ignored with ``legacy=True``.
        Confidences are those of the adjusted choice; a calibration fitted with another value no longer matches
        them. Measured in the annotation guide ("The reference's composition as a prior"): off by default.
    marginal
        Choose the fine type by its probability summed over every coarse type, ``P(fine) = sum_c P(c) P(fine | c)``,
        then the coarse type most likely given it, instead of committing to the most likely coarse type first
        (constrained decoding of a coarse and a fine field; one cached one-token step per coarse type). The
        ``confidence`` is then ``P(fine)``; a calibration (fitted on greedy decoding's path probability) maps it as
        it maps the path probability, close but not fitted to it. Ignored with ``legacy=True``. Measured in the
        annotation guide: off by default.

    Returns
    -------
    A DataFrame indexed like ``adata.obs`` with ``coarse``, ``fine`` (categoricals; missing for cells with no
    expressed model gene), ``confidence`` (probability of the decoded coarse-then-fine path; calibrated: the
    probability that the fine label is right), ``coarse_confidence``, ``fine_confidence`` and ``n_genes``.
    """
    parts.require_task("annotation", "annotate")
    fields = parts.annotation_fields
    if not fields:
        msg = "This model has no cell-type fields in its vocabulary; it cannot annotate."
        raise ValueError(msg)
    legacy_vocab = parts.legacy and parts.vocab.is_legacy
    source = query_source(
        parts,
        adata,
        context=use_metadata and not legacy and not legacy_vocab,
        exclude=fields,
        where="annotate (scmulan.tl.annotate)",
    )
    banned = None
    if restrict_to_cell_types:
        keep = parts.cell_type_mask()
        keep[parts.vocab.end_id] = True
        banned = ~keep
    if legacy:
        recipe = DecodingRecipe.legacy_annotation(banned, embedding=return_embedding)
    else:
        allowed = _constraints(parts, fields, exclude_unclassified) if constrained else None
        n_steps = max(2, len(fields))
        if allowed is not None and len(allowed) < n_steps:
            allowed = allowed + [None] * (n_steps - len(allowed))
        bias = _prior_bias(parts, fields, prior_correction)
        if marginal and (allowed is None or len(fields) != 2):
            msg = (
                "`marginal=True` sums the fine type's probability over the coarse types: it needs constrained "
                "decoding (`constrained=True`) of a model with a coarse and a fine cell-type field."
            )
            raise ValueError(msg)
        recipe = DecodingRecipe.annotation(
            allowed, banned, n_steps, embedding=return_embedding or open_set, logit_bias=bias, marginal=marginal
        )
    out = decode_cells(
        parts.network,
        parts.vocab,
        source,
        recipe,
        layout=parts.layout,
        batch_size=batch_size,
        device=resolve_device(device),
        progress=progress,
        quantize=quantize,
    )
    if legacy:
        window = np.concatenate([out.prompt_tail, out.tokens], axis=1)  # prompt[-3:] + generated
        rows = np.arange(len(window))
        coarse_tok, fine_tok = window[rows, out.n_generated], window[rows, out.n_generated + 1]
        is_ct = parts.cell_type_mask()
        coarse, fine = parts.names(coarse_tok, valid=is_ct), parts.names(fine_tok, valid=is_ct)
        p1, p2 = out.probs[:, 0], out.probs[:, 1]
    else:
        # each step's output must be a category of its field; anything else (possible without the constraint) is
        # no label: Unclassified, as in legacy mode
        names = [parts.names(out.tokens[:, j], valid=parts.vocab.field_mask(f)) for j, f in enumerate(fields)]
        coarse, fine = (names[0], names[1]) if len(fields) == 2 else (names[0], names[0])
        p1 = out.probs[:, 0]
        p2 = out.probs[:, 1] if len(fields) == 2 else np.ones_like(p1)
    embedding = out.embedding
    empty = out.n_genes == 0
    if empty.any():
        warn(f"{int(empty.sum())} cells express none of the model's genes; their labels are left missing.", UserWarning)
    coarse, fine = np.where(empty, None, coarse), np.where(empty, None, fine)
    frame = pd.DataFrame(
        {
            "coarse": pd.Categorical(coarse),
            "fine": pd.Categorical(fine),
            "confidence": np.where(empty, np.nan, p1 * p2 if out.marginal is None else out.marginal).astype(np.float32),
            "coarse_confidence": np.where(empty, np.nan, p1).astype(np.float32),
            "fine_confidence": np.where(empty, np.nan, p2).astype(np.float32),
            "n_genes": out.n_genes,
        },
        index=source.obs_names,
    )
    if not legacy and (calibrated or open_set):
        from scmulan.model._calibration import apply_calibration

        apply_calibration(frame, embedding, parts.calibration, open_set=open_set, source=source)
    return (frame, embedding) if return_embedding else frame


def _prior_bias(parts: ModelParts, fields: list[str], tau: float) -> np.ndarray | None:
    """``-tau * log`` of each label's frequency among the training cells, per field (``None`` when ``tau`` is 0).

    Shifted so that a field's most frequent category gets 0: categories no training cell carried get 0 as well,
    so the correction never promotes a label the model has not learnt.
    """
    if tau == 0:
        return None
    if tau < 0 or not np.isfinite(tau):
        msg = f"`prior_correction` must be a number >= 0, got {tau!r}."
        raise ValueError(msg)
    if parts.gene_counts is None or parts.gene_counts[0, 0] == 0:
        msg = (
            "`prior_correction` needs the training cells per cell type, which this model does not have (trained "
            "before scmulan saved them, or imported): pass `prior_correction=0`."
        )
        raise ValueError(msg)
    cells = cells_per_token(parts.gene_counts, len(parts.vocab))
    bias = np.zeros(len(parts.vocab), dtype=np.float32)
    for field in fields:
        ids = np.flatnonzero(parts.vocab.field_mask(field))
        seen = ids[cells[ids] > 0]
        if len(seen):
            log_freq = np.log(cells[seen] / cells[seen].sum())
            bias[seen] = -tau * (log_freq - log_freq.max())
    return bias


def _constraints(parts: ModelParts, fields: list[str], exclude_unclassified: bool) -> list[np.ndarray | None]:
    """Per decoding step, the entities of that step's field (without ``Unclassified`` when asked)."""
    allowed: list[np.ndarray | None] = [parts.vocab.field_mask(f) for f in fields]
    if exclude_unclassified:
        for mask, f in zip(allowed, fields, strict=True):
            if parts.vocab.has_token(f, UNCLASSIFIED):
                mask[parts.vocab.token_id(f, UNCLASSIFIED)] = False
            if not mask.any():
                msg = (
                    f"`exclude_unclassified=True` leaves no {f!r} category to decode (the model knows only "
                    f"{UNCLASSIFIED!r}); pass `exclude_unclassified=False`."
                )
                raise ValueError(msg)
    return allowed


def predict_metadata(
    parts: ModelParts,
    adata: AnnData,
    fields: Sequence[str] = ("organ", "region"),
    *,
    use_metadata: bool = True,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    quantize: bool = False,
) -> pd.DataFrame:
    """Predict metadata fields (organ, region, …) of every cell.

    The metadata prompt decodes fields in the model's order (:attr:`~scmulan.SCMULAN.metadata_fields_`); each step may only emit
    entities of its field. Fields before the last requested one are decoded too (they are context for it).

    Parameters
    ----------
    adata
        Log-normalised cells, or stored cells (see :meth:`annotate`).
    fields
        Fields to predict (each must be one the model was trained to predict).
    use_metadata
        Put the other metadata the query has in the prompt.
    batch_size, device, progress, quantize
        See :meth:`annotate`.

    Returns
    -------
    A DataFrame with one categorical column per field and ``<field>_confidence``.
    """
    parts.require_task("metadata", "predict_metadata")
    fields = [fields] if isinstance(fields, str) else list(fields)
    order = list(parts.metadata_fields)
    bad = [f for f in fields if f not in order]
    if bad or not fields:
        msg = f"The model predicts the metadata fields {order}; cannot predict {bad or fields}."
        raise ValueError(msg)
    steps = order[: max(order.index(f) for f in fields) + 1]
    legacy_vocab = parts.legacy and parts.vocab.is_legacy
    source = query_source(
        parts,
        adata,
        context=use_metadata and not legacy_vocab,
        exclude=steps,
        where="predict_metadata (scmulan.tl.predict_metadata)",
    )
    out = decode_cells(
        parts.network,
        parts.vocab,
        source,
        DecodingRecipe.metadata([parts.vocab.field_mask(f) for f in steps]),
        layout=parts.layout,
        batch_size=batch_size,
        device=resolve_device(device),
        progress=progress,
        quantize=quantize,
    )
    empty = out.n_genes == 0
    columns = {}
    for f in fields:
        j = steps.index(f)
        columns[f] = pd.Categorical(np.where(empty, None, parts.names(out.tokens[:, j])))
        columns[f"{f}_confidence"] = np.where(empty, np.nan, out.probs[:, j]).astype(np.float32)
    return pd.DataFrame(columns, index=source.obs_names)


def latent_representation(
    parts: ModelParts,
    adata: AnnData,
    *,
    pooling: Literal["annotation", "mean"] = "annotation",
    legacy: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> np.ndarray:
    """Cell embeddings ``(n_cells, width)``.

    Parameters
    ----------
    adata
        Log-normalised cells, or stored cells (see :meth:`annotate`); default: the registered data.
    pooling
        ``"annotation"``: the final hidden state at the first decoded cell type (the original's ``X_scMulan``
        definition; with ``legacy=True`` exactly the original's); ``"mean"``: the mean final hidden state over
        the cell's gene positions (NaN, with a warning giving the count, for cells that express none of the
        model's genes).
    legacy
        Decode as the original scMulan (see :meth:`annotate`).
    batch_size, device, progress
        See :meth:`annotate`.
    """
    if pooling == "annotation":
        _, embedding = annotate(
            parts, adata, legacy=legacy, batch_size=batch_size, device=device, return_embedding=True, progress=progress
        )
        return embedding
    if pooling != "mean":
        msg = f"`pooling` must be 'annotation' or 'mean', got {pooling!r}."
        raise ValueError(msg)
    source = query_source(parts, adata, context=False, where="get_latent_representation (scmulan.tl.embed)")
    out = decode_cells(
        parts.network,
        parts.vocab,
        source,
        DecodingRecipe.mean_pooling(),
        layout=parts.layout,
        batch_size=batch_size,
        device=resolve_device(device),
        progress=progress,
    )
    pooled = out.pooled
    empty = out.n_genes == 0
    if empty.any():  # no gene position to average over: no embedding (not a vector of zeros)
        pooled[empty] = np.nan
        warn(
            f"{int(empty.sum())} cells express none of the model's genes; their mean-pooled embeddings are NaN "
            "(drop them before computing neighbours).",
            UserWarning,
        )
    return pooled
