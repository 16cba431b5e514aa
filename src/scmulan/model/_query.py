"""Query cells for inference: checked, matched to the model's genes, read as a :class:`~scmulan.sentence.CellSource`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData

from scmulan._anndata import get_modality, is_mudata
from scmulan._validation import check_log_normalized, needs_normalization
from scmulan._warnings import warn
from scmulan.model._parts import ModelParts
from scmulan.sentence import CellSource, as_sources

logger = logging.getLogger(__name__)

# Inference warns when the query has fewer than this fraction of the model's genes (the threshold below which
# `scmulan.pp.prepare` warns too): the missing genes count as not expressed.
MIN_GENE_OVERLAP = 0.5


def expression(adata: AnnData, layer: str | None):
    """``adata.X`` or the layer ``layer``, with an error naming the layers there are."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        msg = f"`layer={layer!r}` is not in `adata.layers` ({list(adata.layers)})."
        raise ValueError(msg)
    return adata.layers[layer]


def query_source(
    parts: ModelParts, data: Any, *, context: bool, exclude: Sequence[str] = (), where: str = ""
) -> CellSource:
    """The query cells as a :class:`~scmulan.sentence.CellSource`.

    Parameters
    ----------
    parts
        The model.
    data
        Log-normalised cells: an AnnData (a MuData's RNA modality is used); or cells where they are stored, read
        without loading the matrix: an ``.h5ad`` path, a TileDB-SOMA ``ExperimentAxisQuery``, ``Experiment`` or
        experiment URI, an annbatch collection, or a source built with
        :class:`~scmulan.sentence.CellSource` / ``SomaSource`` / ``AnnbatchSource`` (raw counts are normalised on
        the fly).
    context
        Read the metadata columns the query has (the model's registered ``obs`` columns), except ``exclude``.
        Stored cells give none, except a source built by the caller, whose ``obs_keys`` are read as they are.
    exclude
        Fields never read as context (those being predicted).
    where
        The caller, for error messages.
    """
    in_memory = isinstance(data, AnnData) or is_mudata(data)
    if not in_memory:
        source = _stored(parts, data, exclude=exclude, where=where or "scmulan inference")
    else:
        adata = get_modality(data)
        if adata.n_obs == 0:
            msg = "The AnnData has no cells."
            raise ValueError(msg)
        check_log_normalized(adata.X, where=where or "scmulan inference")
        obs_keys = {}
        if context:
            obs_keys = {f: k for f, k in parts.obs_keys.items() if f not in exclude and k in adata.obs}
        source = CellSource(adata, parts.vocab, obs_keys=obs_keys, gene_symbols=parts.gene_symbols_key)
    n_model, n_shared = len(parts.vocab.genes), source.n_model_genes
    logger.debug("query shares %d of the model's %d genes", n_shared, n_model)
    if n_shared < MIN_GENE_OVERLAP * n_model:
        msg = (
            f"The data have only {n_shared} of the model's {n_model} genes "
            f"({n_shared / n_model:.1%}, below {MIN_GENE_OVERLAP:.0%}); the missing ones count as not expressed, "
            "which may lower the quality of the results. "
        )
        if in_memory and _prepared_for(parts, get_modality(data)):
            msg += (
                "The gene names were matched with `scmulan.pp.prepare(adata, model)` already: the data lack the rest."
            )
        else:
            msg += (
                "If gene names differ (case, Ensembl IDs, aliases), run `scmulan.pp.prepare(adata, model)` to "
                "match them to the model's genes."
            )
        warn(msg, UserWarning)
    return source


def _stored(parts: ModelParts, data: Any, *, exclude: Sequence[str], where: str) -> CellSource:
    """One source over stored cells (SOMA, annbatch, ``.h5ad``), normalising raw counts as it reads them."""
    if isinstance(data, list | tuple):
        msg = f"`{where}` reads one data set at a time; got a list of {len(data)}. Call it once per data set."
        raise TypeError(msg)
    (source,) = as_sources(data, parts.vocab, gene_symbols=parts.gene_symbols_key)
    predicted = [f for f in source.obs_keys if f in exclude]
    if predicted:
        msg = f"The source reads the field(s) {predicted} that `{where}` predicts; build it without them in `obs_keys`."
        raise ValueError(msg)
    if source.n_obs == 0:
        msg = "The data have no cells."
        raise ValueError(msg)
    if not source.normalize:
        first = source.read(np.arange(min(256, source.n_obs)))[0]
        source.normalize = needs_normalization(first, name=f"the first cells given to {where}")
    return source


def _prepared_for(parts: ModelParts, adata: AnnData) -> bool:
    """Whether :func:`scmulan.pp.prepare` matched ``adata``'s genes to this model's gene set."""
    report = adata.uns.get("scmulan_prepare", {})
    if "scmulan_gene" not in adata.var or report.get("n_model_genes") != len(parts.vocab.genes):
        return False
    resolved = adata.var["scmulan_gene"].dropna().astype(str)
    return bool(resolved.isin(parts.vocab.genes).all())
