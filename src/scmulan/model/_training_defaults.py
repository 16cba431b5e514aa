"""Training defaults that scale with the network and the data: the task shares of a width, the epochs of a reference.

``train`` asks these when its options say ``"auto"`` (``task_loss_weights`` and ``max_epochs``); the figures they
cite come from ``benchmarks/annotation_ablation.py`` and ``annotation_open_set.py`` (benchmarks/README.md).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def default_task_shares(width: int) -> tuple[float, float, float]:
    """The loss shares of generation, annotation and metadata that ``train`` uses by default for a network this wide.

    The shares trade annotation against generation, and the trade depends on the network's capacity (PBMC, 560
    training cells, the same trained models scored for both tasks; benchmarks/README.md, "Task shares"): the 64-wide
    ``tiny`` network annotates far better with three shares for annotation (fine macro-F1 0.667 against 0.579 with
    equal shares, 3 splits) at a cost to generation; the 128-wide ``small`` network annotates *and* generates better
    with equal shares (fine macro-F1 0.657 against 0.598, C2ST 0.698 against 0.747, 4 splits; better on every split).

    Parameters
    ----------
    width
        The network's ``n_embd``.

    Returns
    -------
    ``(1, 3, 1)`` below a width of 128, ``(1, 1, 1)`` from 128 on.
    """
    return (1.0, 3.0, 1.0) if width < 128 else (1.0, 1.0, 1.0)


#: ``max_epochs="auto"``: optimiser steps a run makes at least (about what 40 epochs of 560 cells make at batch 32)
AUTO_MIN_STEPS = 750
#: ``max_epochs="auto"``: fewest and most epochs
AUTO_EPOCH_RANGE = (10, 1000)


def default_epochs(n_cells: int, batch_size: int = 32) -> int:
    """The epochs ``train(max_epochs="auto")`` runs for ``n_cells`` training cells.

    A fixed number of epochs gives a small reference few optimiser steps: 40 epochs of 150 cells are 200 steps at
    batch 32, and the `small` network then reaches fine macro-F1 0.36 / 0.49 on PBMC where 150 epochs (750 steps,
    what 40 epochs of 560 cells make) reach 0.55 / 0.55 (splits 0 and 1; benchmarks/README.md, "Calibration, open
    set, small reference").
    So the run lasts enough epochs for 750 optimiser steps (``AUTO_MIN_STEPS``), at least 10 (the former default,
    which larger data keep) and at most 1,000.

    Parameters
    ----------
    n_cells
        Training cells (the registered ones in the training split plus any corpus).
    batch_size
        Sentences per optimiser step (times ``accumulate_grad_batches``).

    Returns
    -------
    Epochs: ``ceil(750 / ceil(n_cells / batch_size))`` within ``[10, 1000]``.

    Examples
    --------
    >>> default_epochs(150), default_epochs(504), default_epochs(100_000)
    (150, 47, 10)
    """
    steps_per_epoch = max(1, -(-int(n_cells) // max(1, int(batch_size))))
    lowest, highest = AUTO_EPOCH_RANGE
    return int(min(highest, max(lowest, -(-AUTO_MIN_STEPS // steps_per_epoch))))


def auto_epochs(sources: list, indices: list, batch_size: int) -> int:
    """:func:`default_epochs` for the training cells of ``sources`` (``indices`` None: the whole source)."""
    n_cells = sum(s.n_obs if idx is None else len(idx) for s, idx in zip(sources, indices, strict=True))
    epochs = default_epochs(n_cells, batch_size)
    logger.info(
        "max_epochs='auto': %d epochs for %d training cells at %d sentences per step", epochs, n_cells, batch_size
    )
    return epochs
