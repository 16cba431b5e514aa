"""Validation sentences: every labelled validation cell is annotated, the other tasks are scored alongside."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from torch.utils.data import IterableDataset

from scmulan.sentence import TASKS, TaskSpec


class ChainedBatches(IterableDataset):
    """The batches of several datasets, one dataset after the other (with a length, unlike torch's ChainDataset).

    Parameters
    ----------
    datasets
        Iterable datasets yielding whole batches (e.g. :class:`~scmulan.sentence.TrainingSentenceDataset`).
    """

    def __init__(self, datasets: Sequence[IterableDataset]) -> None:
        super().__init__()
        self.datasets = list(datasets)

    def __iter__(self) -> Iterator:
        for dataset in self.datasets:
            yield from dataset

    def __len__(self) -> int:
        """Batches of all the datasets together."""
        return sum(len(d) for d in self.datasets)


def validation_dataset(make: Callable[[TaskSpec], IterableDataset], spec: TaskSpec) -> IterableDataset:
    """The validation sentences of a training run with the task mix ``spec``.

    Sampling one task per validation cell, as training does, would give only some of the labelled cells an
    annotation sentence (about half with generation + annotation), so the validation macro-F1 would be measured on
    a random part of the validation cells. When annotation is trained, every validation cell with labels gets an
    annotation sentence, and every cell also gets one sentence of the other trained tasks (sampled with their
    weights), so the validation losses of generation and metadata are still logged.

    Parameters
    ----------
    make
        Builds the validation dataset of a task spec (the validation cells, no shuffling).
    spec
        The training task mix.

    Returns
    -------
    ``make(spec)`` when annotation is not trained; otherwise the annotation sentences of every labelled cell
    followed by the other tasks' sentences (:class:`ChainedBatches`), or the annotation sentences alone when
    annotation is the only task.
    """
    annotation = TASKS.index("annotation")
    if spec.weights[annotation] <= 0:
        return make(spec)
    annotate = make(dataclasses.replace(spec, weights=tuple(float(i == annotation) for i in range(len(TASKS)))))
    others = tuple(0.0 if i == annotation else float(w) for i, w in enumerate(spec.weights))
    if sum(others) <= 0:
        return annotate
    return ChainedBatches([annotate, make(dataclasses.replace(spec, weights=others))])
