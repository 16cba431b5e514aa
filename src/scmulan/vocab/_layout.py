"""Where tokens sit: the id layout of a new vocabulary, and the checked lookup tables of any vocabulary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._names import (
    END,
    GENE,
    PAD,
    SPECIAL,
    TASK,
    TASKS,
    check_field_name,
    clean_strings,
    order_metadata_fields,
)


def new_layout(
    genes: Sequence[str], metadata: Mapping[str, Sequence[str]] | None, *, n_reserved: Any
) -> tuple[list[tuple[str, str]], list[str]]:
    """The tokens of a new vocabulary in id order, and its metadata fields (the layout of ``Vocabulary.build``).

    Parameters
    ----------
    genes
        Gene symbols; duplicates are an error.
    metadata
        Field name -> categories (converted to strings; missing or empty categories are an error).
    n_reserved
        Number of reserved task tokens.
    """
    if isinstance(n_reserved, bool) or not isinstance(n_reserved, int | np.integer) or n_reserved < 0:
        msg = f"n_reserved must be a non-negative integer, got {n_reserved!r}"
        raise ValueError(msg)
    gene_list = clean_strings(genes, "genes")
    if not gene_list:
        msg = "genes is empty; a vocabulary needs at least one gene"
        raise ValueError(msg)
    if len(set(gene_list)) != len(gene_list):
        seen: set[str] = set()
        dups = list(dict.fromkeys(g for g in gene_list if g in seen or seen.add(g)))
        msg = f"genes has {len(dups)} duplicated symbol(s), e.g. {dups[:5]}; make gene names unique first"
        raise ValueError(msg)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping):
        msg = f"metadata must be a mapping of field name -> categories, got {type(metadata).__name__}"
        raise ValueError(msg)
    fields = order_metadata_fields(check_field_name(f) for f in metadata)
    tokens = [(SPECIAL, END), (SPECIAL, PAD)]
    tokens += [(TASK, t) for t in TASKS]
    tokens += [(TASK, f"<reserved{k}>") for k in range(1, int(n_reserved) + 1)]
    tokens += [(GENE, g) for g in gene_list]
    for field in fields:
        cats = dict.fromkeys(clean_strings(metadata[field], f"metadata[{field!r}]"))
        tokens += [(field, c) for c in cats]
    return tokens, fields


def index_tokens(
    tokens: Sequence[tuple[str, str]],
    aliases: Sequence[tuple[str, str, int]],
    metadata_fields: Sequence[str] | None,
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, dict[str, int]], dict[str, dict[int, str]]]:
    """Check tokens and aliases, and build the lookup tables of a vocabulary.

    Parameters
    ----------
    tokens
        The primary ``(field, category)`` of every id, in id order.
    aliases
        Extra ``(field, category, id)`` lookups resolving to an existing id.
    metadata_fields
        Declared metadata fields (``None``: those found in ``tokens`` and ``aliases``).

    Returns
    -------
    The metadata fields (canonical order), every field, ``field -> {category: id}`` and
    ``field -> {id: category}`` (the first name of each id in that field).
    """
    kinds = (SPECIAL, GENE, TASK)
    found = [f for f, *_ in (*tokens, *aliases) if f not in kinds]
    declared = list(found if metadata_fields is None else metadata_fields)
    for f in declared:
        check_field_name(f)
    undeclared = sorted(set(found) - set(declared))
    if undeclared:
        msg = f"tokens use metadata field(s) {undeclared} that are missing from metadata_fields={declared}"
        raise ValueError(msg)
    meta = tuple(order_metadata_fields(declared))
    present = {f for f, _ in tokens}
    fields = (*(k for k in (SPECIAL, TASK, GENE) if k in present), *meta)
    all_fields = (*kinds, *meta)
    index: dict[str, dict[str, int]] = {f: {} for f in all_fields}
    members: dict[str, dict[int, str]] = {f: {} for f in all_fields}

    def register(field: str, category: str, i: int) -> None:
        cats = index[field]
        if category in cats:
            msg = f"token ({field!r}, {category!r}) is given twice (ids {cats[category]} and {i})"
            raise ValueError(msg)
        cats[category] = i
        members[field].setdefault(i, category)

    for i, (field, category) in enumerate(tokens):
        if field == SPECIAL and category not in (END, PAD):
            msg = f"unknown special token {category!r} (id {i}); the special tokens are {END!r} and {PAD!r}"
            raise ValueError(msg)
        register(field, category, i)
    if END not in index[SPECIAL]:
        msg = f"a vocabulary needs the end token ({SPECIAL!r}, {END!r})"
        raise ValueError(msg)
    for field, category, i in aliases:
        if not 0 <= i < len(tokens):
            msg = f"alias ({field!r}, {category!r}) points at id {i}, outside 0..{len(tokens) - 1}"
            raise ValueError(msg)
        target = tokens[i][0]
        fixed = (SPECIAL, GENE)  # never aliased, nor alias targets
        if field in fixed or target in fixed or (field == TASK) != (target == TASK):
            msg = f"alias ({field!r}, {category!r}) -> id {i} crosses token kinds (id {i} is a {target!r} token)"
            raise ValueError(msg)
        register(field, category, i)
    return meta, fields, index, members
