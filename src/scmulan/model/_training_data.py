"""What a training run reads: the seeded train/validation/held-out split and the checked task mix."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from scmulan.model._parts import ModelParts
from scmulan.sentence import ANNOTATION_FIELDS, TASKS, CellSource, TaskSpec

logger = logging.getLogger(__name__)


def split(n: int, train_size: float, validation_size: float | None, seed: int) -> tuple[np.ndarray, ...]:
    """Sorted training, validation and held-out row indices of ``n`` cells (a seeded permutation)."""
    perm = np.random.default_rng(seed).permutation(n)
    validation_size = (1.0 - train_size) if validation_size is None else validation_size
    if not 0 < train_size <= 1 or validation_size < 0 or train_size + validation_size > 1 + 1e-9:
        msg = f"`train_size` ({train_size}) and `validation_size` ({validation_size}) must fit in [0, 1]."
        raise ValueError(msg)
    n_train = max(1, int(round(train_size * n)))
    n_val = min(n - n_train, int(round(validation_size * n)))
    return np.sort(perm[:n_train]), np.sort(perm[n_train : n_train + n_val]), np.sort(perm[n_train + n_val :])


def task_spec(
    parts: ModelParts,
    tasks: Sequence[str] | str | None,
    task_weights: Sequence[float] | None,
    metadata_fields: Sequence[str] | None,
    context_dropout: float,
    gene_dropout: float = 0.0,
) -> TaskSpec:
    """The task mix of a run: the requested tasks (default: those the registered fields support), checked."""
    fields = tuple(parts.obs_keys)
    if tasks is None and task_weights is not None:
        tasks = TASKS
    elif tasks is None:
        has_metadata = any(f not in ANNOTATION_FIELDS for f in (metadata_fields or fields))
        supported = {
            "generation": True,
            "annotation": any(f in fields for f in ANNOTATION_FIELDS),
            "metadata": has_metadata,
        }
        tasks = [t for t in TASKS if supported[t]]
        logger.info("training tasks: %s", ", ".join(tasks))
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = set(tasks) - set(TASKS)
    if unknown or not tasks:
        msg = f"`tasks` must be a non-empty subset of {TASKS}, got {tasks}."
        raise ValueError(msg)
    if task_weights is not None and len(task_weights) != len(tasks):
        msg = f"`task_weights` needs one weight per task in `tasks` ({len(tasks)}), got {len(task_weights)}."
        raise ValueError(msg)
    weights = dict(zip(tasks, task_weights or [1.0] * len(tasks), strict=True))
    if metadata_fields is not None:
        unknown = set(metadata_fields) - set(fields)
        if unknown:
            msg = f"`metadata_fields` {sorted(unknown)} are not registered (registered: {list(fields)})."
            raise ValueError(msg)
    if "annotation" in tasks and not any(f in fields for f in ANNOTATION_FIELDS):
        msg = "The annotation task needs `cell_type_key` and/or `coarse_cell_type_key` in `setup_anndata`."
        raise ValueError(msg)
    if "metadata" in tasks and not [f for f in (metadata_fields or fields) if f not in ANNOTATION_FIELDS]:
        msg = "The metadata task needs a registered metadata field other than the cell types (e.g. `organ_key`)."
        raise ValueError(msg)
    return parts.layout.task_spec(
        fields,
        tuple(weights.get(t, 0.0) for t in TASKS),
        metadata_fields=metadata_fields,
        context_dropout=context_dropout,
        gene_dropout=gene_dropout,
    )


def check_labels(spec: TaskSpec, sources: list[CellSource], indices: list) -> None:
    """Fail early when a requested task has no cell with the labels it needs."""
    known = np.concatenate(
        [s.metadata[ix] if ix is not None else s.metadata for s, ix in zip(sources, indices, strict=True)]
    )
    known = known >= 0
    names = dict(zip(TASKS, spec.weights, strict=True))
    if names["annotation"] > 0 and spec.annotation_columns.any() and not known[:, spec.annotation_columns].all(1).any():
        msg = "No training cell has all the cell-type labels the annotation task needs; check the registered columns."
        raise ValueError(msg)
    if names["metadata"] > 0 and spec.metadata_columns.any() and not known[:, spec.metadata_columns].any():
        msg = "No training cell has any of the metadata fields the metadata task predicts."
        raise ValueError(msg)
