"""Lightning's remarks that a user of :meth:`SCMULAN.train` cannot act on, silenced where they arise (as scvi-tools does).

Silenced during a training run, by message:

- ``Your `IterableDataset` has `__len__` defined``: the sentence datasets know their length per process by design;
- ``isinstance(treespec, LeafSpec)` is deprecated``: Lightning's own use of a PyTorch API;
- ``The '…_dataloader' does not have many workers`` and ``Consider setting `persistent_workers=True```: the loaders
  are scmulan's (``num_workers`` of ``train()`` is the user's choice);
- ``GPU available but not used``: ``accelerator="cpu"`` was asked for;
- ``Checkpoint directory … exists and is not empty``: ``checkpoint_dir`` is reused on purpose, to resume;
- ``You defined a `validation_step` but have no `val_dataloader```: a run without validation cells;
- ``The number of training batches (N) is smaller than the logging interval``: unless ``log_every_n_steps`` was
  given (then it concerns the user's own setting).

Lightning's INFO banners (``GPU available: …``, ``TPU available: …``, the LitLogger tip, ``Trainer.fit stopped``)
are shown only when the ``scmulan`` logger is at INFO or below (``-v`` on the command line). Every other warning,
in particular those about settings the user chose, is shown as usual.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

EXPECTED_WARNINGS = (
    r".*`IterableDataset` has `__len__` defined",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The '\w+' does not have many workers",
    r"Consider setting `persistent_workers=True`",
    r"GPU available but not used",
    r"Checkpoint directory .* exists and is not empty",
    r"You defined a `validation_step` but have no `val_dataloader`",
)
LOG_INTERVAL_WARNING = r"The number of training batches \(\d+\) is smaller than the logging interval"
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def quiet_lightning(*, log_interval_given: bool = False) -> Iterator[None]:
    """Within the block, Lightning's expected warnings are ignored and its INFO banners follow the scmulan logger.

    Parameters
    ----------
    log_interval_given
        The user set ``log_every_n_steps``: Lightning's remark that it exceeds the number of batches stays.
    """
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    if not logging.getLogger("scmulan").isEnabledFor(logging.INFO):
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        with warnings.catch_warnings():
            for message in EXPECTED_WARNINGS + (() if log_interval_given else (LOG_INTERVAL_WARNING,)):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def quietly(fit: F) -> F:
    """Decorate a training function taking Lightning ``Trainer`` keywords: run it within :func:`quiet_lightning`."""

    @functools.wraps(fit)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with quiet_lightning(log_interval_given="log_every_n_steps" in kwargs):
            return fit(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
