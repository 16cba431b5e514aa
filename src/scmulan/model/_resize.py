"""Growing the network with its vocabulary (new categories for fine-tuning)."""

from __future__ import annotations

import dataclasses

import torch

from scmulan.nn import CSentenceTransformer
from scmulan.vocab import Vocabulary

_VOCAB_SIZED = (
    "entity_embedding.weight",
    "entity_head.weight",
    "entity_head.bias",
    "value_head.weight",
    "gene_bag.weight",
)


@torch.no_grad()
def extend_network(net: CSentenceTransformer, old: Vocabulary, new: Vocabulary) -> CSentenceTransformer:
    """A copy of ``net`` sized for ``new`` (``old`` with ids appended): old rows unchanged, new rows initialised.

    A new entity's rows (entity embedding, entity-head and value-head rows) start at the mean of the rows of the
    existing entities of its field — a new cell type starts as an average cell type — or, for a new field, of all
    metadata entities. (Gene-bag rows of metadata entities are zero and stay zero: only genes carry levels.)
    """
    n_old, n_new = len(old), len(new)
    if n_new < n_old or any(new.token(i) != old.token(i) for i in range(n_old)):
        msg = "The new vocabulary must extend the old one (same ids for the old entities, new ids appended)."
        raise ValueError(msg)
    config = dataclasses.replace(net.config, vocab_size=n_new)
    grown = CSentenceTransformer(config).to(net.device)
    state = net.state_dict()
    target = grown.state_dict()
    metadata_ids = [i for i in range(n_old) if old.token(i)[0] in old.metadata_fields]
    for key, value in state.items():
        if key not in _VOCAB_SIZED:
            target[key] = value
            continue
        rows = target[key]
        rows[:n_old] = value
        for i in range(n_old, n_new):
            field = new.token(i)[0]
            same = old.field_ids(field) if field in old.fields else metadata_ids
            source = value[torch.as_tensor(same, dtype=torch.long)] if len(same) else value
            rows[i] = source.mean(0)
        target[key] = rows
    grown.load_state_dict(target)
    return grown
