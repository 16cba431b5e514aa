"""Fine-tuning (a recipe of ``SCMULAN.finetune``): the new data's categories join the vocabulary and the network."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
from anndata import AnnData

from scmulan._anndata import get_modality
from scmulan._validation import check_log_normalized
from scmulan.model._fields import registry_key
from scmulan.model._gene_counts import extend_gene_count_table
from scmulan.model._parts import ModelParts
from scmulan.model._query import expression
from scmulan.model._registration import registered_obs_keys
from scmulan.model._resize import extend_network
from scmulan.sentence import CellSource

logger = logging.getLogger(__name__)


def finetuning_parts(parts: ModelParts, adata: AnnData, find_manager) -> tuple[AnnData, Any, ModelParts]:
    """The fine-tuning data, its registration, and the parts with its new categories in the vocabulary.

    Nothing of the model changes here (a refused ``adata`` leaves it as it was): the caller adopts the result.
    """
    adata = get_modality(adata)
    manager = find_manager(adata, required=False)
    if manager is None:
        msg = "Register the fine-tuning data first: `scmulan.SCMULAN.setup_anndata(adata, cell_type_key=..., ...)`."
        raise ValueError(msg)
    registry = manager.registry
    setup = registry["setup_args"]
    # refused before anything changes: the vocabulary, network and attached data stay as they were
    check_log_normalized(expression(adata, setup.get("layer")), where="SCMULAN.finetune")
    obs_keys = registered_obs_keys(registry)
    vocab, network, debin_table = parts.vocab, parts.network, parts.debin_table
    for field in obs_keys:
        vocab = vocab.extend(
            field, [str(c) for c in manager.get_state_registry(registry_key(field))["categorical_mapping"]]
        )
    if len(vocab) > len(parts.vocab):
        logger.info("vocabulary extended by %d entities", len(vocab) - len(parts.vocab))
        network = extend_network(network, parts.vocab, vocab)
        if debin_table is not None:
            pad = np.zeros((len(vocab) - len(parts.vocab), debin_table.shape[1]), dtype=np.float32)
            debin_table = np.concatenate([debin_table, pad])
    source = CellSource(adata, vocab, gene_symbols=setup.get("gene_symbols_key"))
    logger.info("fine-tuning data share %d of the model's %d genes", source.n_model_genes, len(vocab.genes))
    new = replace(
        parts,
        vocab=vocab,
        network=network,
        obs_keys=obs_keys,
        layer=setup.get("layer"),
        gene_symbols_key=setup.get("gene_symbols_key"),
        legacy=False,  # fine-tuned: no longer the original model (metadata context is used from now on)
        debin_table=debin_table,
        gene_counts=extend_gene_count_table(parts.gene_counts, len(vocab)),
        calibration=None,
    )
    return adata, manager, new
