"""Ragged c-sentences and their vectorised assembly from per-cell segments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _ragged as ragged
from ._genes import GeneSegments

# Target groups (training): 0 marks prompt positions (no target); positions sharing a group > 0 form one
# target set. The gene segment of a generation sentence is one unordered set; each label and the final <E> are
# their own group, so label segments are ordered.
PROMPT_GROUP = 0
GENE_SET_GROUP = 1
FIRST_LABEL_GROUP = 2
END_GROUP = 1000


@dataclass
class Sentences:
    """C-sentences of ``n`` cells, concatenated: cell ``i`` is ``[offsets[i]:offsets[i+1]]``.

    Attributes
    ----------
    ids
        Entity ids (int64).
    levels
        Values 0..10 (int64): gene levels, 0 for every other entity.
    offsets
        ``(n + 1,)`` int64.
    groups
        Training only: the target group of every position (int16; see the module constants). The entity head is
        trained at position ``t`` whenever ``groups[t + 1] > 0``, against every entity at a later position of the
        same group.
    """

    ids: np.ndarray
    levels: np.ndarray
    offsets: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Sentence lengths."""
        return np.diff(self.offsets)

    def cell(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and levels of sentence ``i``."""
        sl = slice(self.offsets[i], self.offsets[i + 1])
        return self.ids[sl], self.levels[sl]

    def subset(self, rows: np.ndarray) -> Sentences:
        """The sentences ``rows``, in that order."""
        src, offsets = ragged.take(self.offsets, rows)
        groups = self.groups[src] if self.groups is not None else None
        return Sentences(self.ids[src], self.levels[src], offsets, groups)


@dataclass
class Segment:
    """One piece of every cell's sentence (possibly empty for some cells), for :func:`concat`.

    The entries of ``n`` cells are concatenated: cell ``i`` has ``ids[offsets[i]:offsets[i+1]]``. Build one with
    :meth:`from_genes`, :meth:`from_matrix` or :meth:`constant`.

    Parameters
    ----------
    ids
        Entity ids of all entries (int64).
    levels
        Their values (int64): gene levels 1..10, 0 for every other entity.
    offsets
        ``(n + 1,)`` int64, starting at 0 and non-decreasing.
    group
        Training target group (see :attr:`Sentences.groups`): an int shared by all entries (``PROMPT_GROUP``: no
        target; ``GENE_SET_GROUP``: one unordered set), or ``"ordered"`` to give each entry its own label group
        (``FIRST_LABEL_GROUP + position within the segment``), so the entries are predicted in order.
    """

    ids: np.ndarray
    levels: np.ndarray
    offsets: np.ndarray
    group: int | str = PROMPT_GROUP

    @property
    def lengths(self) -> np.ndarray:
        """Entries per cell, ``(n,)`` int64 (0 where the segment is empty for the cell)."""
        return np.diff(self.offsets)

    @classmethod
    def from_genes(cls, genes: GeneSegments, *, rows: np.ndarray | None = None, group: int = PROMPT_GROUP) -> Segment:
        """The gene segments, kept only for the cells where ``rows`` (a boolean mask) is True."""
        if rows is None:
            return cls(genes.ids, genes.levels, genes.offsets, group)
        keep = np.repeat(rows, genes.lengths)
        offsets = ragged.offsets_from_lengths(genes.lengths * rows)
        return cls(genes.ids[keep], genes.levels[keep], offsets, group)

    @classmethod
    def from_matrix(cls, tokens: np.ndarray, *, group: int | str = PROMPT_GROUP) -> Segment:
        """Tokens ``(n, k)`` with ``-1`` for absent entries (row order kept), all with level 0."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim == 1:
            tokens = tokens[:, None]
        present = tokens >= 0
        offsets = ragged.offsets_from_lengths(present.sum(1))
        ids = tokens[present]  # row-major: keeps each row's column order
        return cls(ids, np.zeros_like(ids), offsets, group)

    @classmethod
    def constant(cls, token: int, n: int, *, group: int = PROMPT_GROUP) -> Segment:
        """The same token (level 0) for all ``n`` cells."""
        return cls.from_matrix(np.full((n, 1), token, dtype=np.int64), group=group)


def concat(segments: list[Segment]) -> Sentences:
    """Concatenate the segments cell by cell: sentence ``i`` = segment 0 of ``i`` + segment 1 of ``i`` + …"""
    lengths = np.stack([s.lengths for s in segments], axis=1)  # (n, S)
    offsets = ragged.offsets_from_lengths(lengths.sum(1))
    start_in_cell = np.cumsum(lengths, axis=1) - lengths  # (n, S): where each segment starts inside its cell
    total = int(offsets[-1])
    ids = np.empty(total, dtype=np.int64)
    levels = np.empty(total, dtype=np.int64)
    groups = np.empty(total, dtype=np.int16)
    for j, seg in enumerate(segments):
        L = seg.lengths
        local = np.arange(int(L.sum())) - np.repeat(seg.offsets[:-1], L)  # position inside the segment
        dest = np.repeat(offsets[:-1] + start_in_cell[:, j], L) + local
        ids[dest] = seg.ids
        levels[dest] = seg.levels
        groups[dest] = FIRST_LABEL_GROUP + local if seg.group == "ordered" else seg.group
    return Sentences(ids, levels, offsets, groups)


def prompts(
    task_id: int,
    n: int,
    *,
    genes: GeneSegments | None = None,
    context: np.ndarray | None = None,
    prompt_genes: GeneSegments | None = None,
) -> Sentences:
    """Inference prompts: ``genes…, context metadata…, <task>, prompt genes…``.

    Annotation and metadata prompts pass ``genes`` (and the metadata the query knows as ``context``); generation
    prompts pass the conditions as ``context`` and optional ``prompt_genes`` with fixed levels after the task token.

    Parameters
    ----------
    task_id
        Id of the task prompt token.
    n
        Number of cells.
    genes
        Gene segments before the metadata.
    context
        Metadata token ids ``(n, k)``, ``-1`` where absent.
    prompt_genes
        Gene segments after the task token.
    """
    segments = []
    if genes is not None:
        segments.append(Segment.from_genes(genes))
    if context is not None:
        segments.append(Segment.from_matrix(context))
    segments.append(Segment.constant(task_id, n))
    if prompt_genes is not None:
        segments.append(Segment.from_genes(prompt_genes))
    s = concat(segments)
    s.groups = None
    return s
