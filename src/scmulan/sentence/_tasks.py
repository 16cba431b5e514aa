"""Training sentences for the three pretraining tasks, sampled per cell.

=============== ======================================================== =====================================
task            prompt                                                   continuation (the targets)
=============== ======================================================== =====================================
generation      context metadata…, ``<generate>``                        genes (a set, or by expression)…, ``<E>``
annotation      genes…, context metadata…, ``<annotate>``                coarse type, fine type, ``<E>``
metadata        genes…, context metadata…, ``<metadata>``                organ, region, … (ordered), ``<E>``
=============== ======================================================== =====================================

Context metadata are the cell's other known fields, each dropped at random so that the model also works
without them. A task whose labels a cell lacks is never sampled for it; a cell that qualifies for none is left
out (``task == -1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._assemble import END_GROUP, GENE_SET_GROUP, PROMPT_GROUP, Segment, Sentences, concat
from ._genes import GeneSegments, descending_within
from ._ragged import offsets_from_lengths

TASKS = ("generation", "annotation", "metadata")
TASK_TOKENS = {"generation": "<generate>", "annotation": "<annotate>", "metadata": "<metadata>"}
ANNOTATION_FIELDS = ("coarse_cell_type", "cell_type")


@dataclass
class TaskSpec:
    """Which fields each task uses, and how tasks are mixed.

    Parameters
    ----------
    fields
        The metadata fields of the ``metadata`` matrix given to :func:`training_sentences`, in canonical order.
    weights
        Relative sampling weight of ``generation``, ``annotation``, ``metadata``.
    annotation_fields
        Fields predicted by the annotation task, in order (coarse, then fine). Fields absent from ``fields`` are
        ignored; a model with only fine labels predicts ``cell_type`` alone.
    metadata_fields
        Fields predicted by the metadata task, in order; ``None``: every field of ``fields`` that is not an
        annotation field.
    context_dropout
        Probability of leaving out each context metadata token.
    gene_dropout
        Probability of leaving out each gene of an annotation or metadata sentence's prompt (at least one stays):
        an augmentation that makes labels robust to the genes a query happens to capture. Generation sentences keep
        all their genes. 0 draws nothing (the sentences are those of a spec without it).
    generation_order
        Order of the genes of generation sentences: ``"shuffle"`` (as they come: the set objective's unordered set)
        or ``"descending"`` (most to least expressed, ties in random order: the next-entity objective).
    """

    fields: tuple[str, ...]
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    annotation_fields: tuple[str, ...] = ANNOTATION_FIELDS
    metadata_fields: tuple[str, ...] | None = None
    context_dropout: float = 0.5
    generation_order: str = "shuffle"
    gene_dropout: float = 0.0
    _ann: np.ndarray = field(init=False, repr=False)
    _meta: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.weights) != len(TASKS) or min(self.weights) < 0 or sum(self.weights) <= 0:
            msg = f"`weights` must be three non-negative numbers for {TASKS} with a positive sum, got {self.weights}."
            raise ValueError(msg)
        if self.generation_order not in ("shuffle", "descending"):
            msg = f"`generation_order` must be 'shuffle' or 'descending', got {self.generation_order!r}."
            raise ValueError(msg)
        if not 0.0 <= self.context_dropout <= 1.0:
            msg = f"`context_dropout` must be in [0, 1], got {self.context_dropout}."
            raise ValueError(msg)
        if not 0.0 <= self.gene_dropout < 1.0:
            msg = f"`gene_dropout` must be in [0, 1), got {self.gene_dropout}."
            raise ValueError(msg)
        self.fields = tuple(self.fields)
        self._ann = np.array([f in self.annotation_fields for f in self.fields], dtype=bool)
        if self.metadata_fields is None:
            self._meta = ~self._ann
        else:
            unknown = set(self.metadata_fields) - set(self.fields)
            if unknown:
                msg = f"`metadata_fields` {sorted(unknown)} are not among the registered fields {list(self.fields)}."
                raise ValueError(msg)
            self._meta = np.array([f in self.metadata_fields for f in self.fields], dtype=bool)
        # Annotation targets must come out coarse before fine: order the columns as annotation_fields says.
        order = [self.fields.index(f) for f in self.annotation_fields if f in self.fields]
        if order != sorted(order):
            msg = f"`fields` must list {self.annotation_fields} in that order."
            raise ValueError(msg)

    @property
    def annotation_columns(self) -> np.ndarray:
        """Boolean mask over ``fields`` of the annotation targets."""
        return self._ann

    @property
    def metadata_columns(self) -> np.ndarray:
        """Boolean mask over ``fields`` of the metadata targets."""
        return self._meta


def sample_tasks(spec: TaskSpec, n_genes: np.ndarray, metadata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a task for every cell among those it qualifies for, with the weights of ``spec``.

    Annotation needs expressed genes and every annotation field; metadata needs expressed genes and at least one
    metadata field; generation needs nothing. A task with weight 0 is never drawn.

    Parameters
    ----------
    spec
        Fields (the columns of ``metadata``), which of them each task predicts, and the task weights.
    n_genes
        Expressed model genes per cell, ``(n,)`` (e.g. :attr:`GeneSegments.lengths`).
    metadata
        Metadata token ids ``(n, len(spec.fields))``, ``-1`` where the cell's value is unknown.
    rng
        Random generator (one uniform draw per cell).

    Returns
    -------
    Task index per cell into :data:`TASKS` (int64, ``(n,)``), ``-1`` where the cell qualifies for none.
    """
    known = metadata >= 0
    can = np.zeros((len(n_genes), len(TASKS)), dtype=bool)
    can[:, 0] = True
    if spec.annotation_columns.any():
        can[:, 1] = (n_genes > 0) & known[:, spec.annotation_columns].all(1)
    if spec.metadata_columns.any():
        can[:, 2] = (n_genes > 0) & known[:, spec.metadata_columns].any(1)
    w = can * np.asarray(spec.weights, dtype=np.float64)[None]
    total = w.sum(1)
    u = rng.random(len(n_genes)) * total
    chosen = (np.cumsum(w, axis=1) > u[:, None]) & (w > 0)  # the first task whose cumulative weight passes u
    last_possible = len(TASKS) - 1 - np.argmax((w > 0)[:, ::-1], axis=1)  # u rounded up to the total
    task = np.where(chosen.any(1), chosen.argmax(1), last_possible)
    return np.where(total > 0, task, -1)


def training_sentences(
    genes: GeneSegments,
    metadata: np.ndarray,
    spec: TaskSpec,
    task_ids: dict[str, int],
    end_id: int,
    rng: np.random.Generator,
) -> tuple[Sentences, np.ndarray]:
    """Training sentences with their target groups for a chunk of cells.

    Parameters
    ----------
    genes
        Gene segments (shuffled order for training).
    metadata
        Token ids ``(n, len(spec.fields))``, ``-1`` where the cell's value is unknown.
    spec
        Fields and task mix.
    task_ids
        Token id of each task prompt, keyed by task name.
    end_id
        Id of ``<E>``.
    rng
        Random generator (task sampling and context dropout).

    Returns
    -------
    The sentences of the cells that got a task, and the task index of every input cell (``-1``: left out).
    """
    task = sample_tasks(spec, genes.lengths, metadata, rng)
    kept = np.flatnonzero(task >= 0)
    task_k = task[kept]
    meta = metadata[kept]
    known = meta >= 0
    is_gen, is_ann, is_meta = (task_k == 0), (task_k == 1), (task_k == 2)

    target = np.zeros_like(known)
    target[is_ann] = known[is_ann] & spec.annotation_columns[None]
    target[is_meta] = known[is_meta] & spec.metadata_columns[None]
    context = known & ~target & (rng.random(known.shape) >= spec.context_dropout)

    genes_k = genes.subset(kept)
    if spec.generation_order == "descending":
        genes_k = descending_within(genes_k, is_gen)
    task_token = np.array([task_ids[TASK_TOKENS[t]] for t in TASKS], dtype=np.int64)[task_k]
    prompt_genes = drop_genes(genes_k, ~is_gen, spec.gene_dropout, rng) if spec.gene_dropout > 0 else genes_k
    sentences = concat(
        [
            Segment.from_genes(prompt_genes, rows=~is_gen, group=PROMPT_GROUP),
            Segment.from_matrix(np.where(context, meta, -1), group=PROMPT_GROUP),
            Segment.from_matrix(task_token, group=PROMPT_GROUP),
            Segment.from_genes(genes_k, rows=is_gen, group=GENE_SET_GROUP),
            Segment.from_matrix(np.where(target, meta, -1), group="ordered"),
            Segment.constant(end_id, len(kept), group=END_GROUP),
        ]
    )
    return sentences, task


def drop_genes(genes: GeneSegments, rows: np.ndarray, p: float, rng: np.random.Generator) -> GeneSegments:
    """The segments with each gene of the cells ``rows`` left out with probability ``p``; every cell keeps one.

    Parameters
    ----------
    genes
        Gene segments of ``n`` cells.
    rows
        ``(n,)`` boolean: the cells whose genes may be dropped.
    p
        Drop probability per gene.
    rng
        Random generator (one draw per gene of every cell).
    """
    lengths = genes.lengths
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    drop = (rng.random(len(genes.ids)) < p) & rows[row_of]
    drop[genes.offsets[:-1][lengths > 0]] = False  # the first (in segment order) always stays
    keep = ~drop
    kept = np.bincount(row_of[keep], minlength=len(lengths))
    values = genes.values[keep] if genes.values is not None else None
    return GeneSegments(genes.ids[keep], genes.levels[keep], offsets_from_lengths(kept), genes.n_truncated, values)
