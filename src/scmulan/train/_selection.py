"""Checkpoint selection: keep the weights of the epoch with the best validation metric, restore them at the end."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy

logger = logging.getLogger(__name__)


class BestCheckpoint(Callback):
    """Keep a CPU copy of the weights whenever a validation metric improves; load the best one when training ends.

    Lightning's ``ModelCheckpoint(monitor=...)`` writes the best weights to disk and leaves the last ones in the
    model; this keeps them in memory and puts them back, so the trained model *is* the best epoch's. Ties go to the
    later epoch (more training at an equal score). The copy, the score and the epoch travel in the run's
    checkpoints, so a resumed run selects as one that never stopped.

    Parameters
    ----------
    monitor
        A metric logged once per validation epoch, e.g. ``"validation_cell_type_macro_f1"`` (the fine type's
        teacher-forced macro-F1 logged by :class:`~scmulan.train.CSentenceTrainingPlan` when it has
        ``labels``) or ``"validation_loss"`` with ``mode="min"``.
    mode
        ``"max"`` (higher is better) or ``"min"``.
    min_delta
        Smallest change that counts as an improvement (0: any change, ties included).

    Attributes
    ----------
    best_score
        The best value seen (``None`` before the first validation epoch).
    best_epoch
        The epoch whose weights are kept (0-based, as ``history_`` indexes epochs).
    restored
        Whether the best weights were loaded at the end of training.
    """

    def __init__(self, monitor: str = "validation_cell_type_macro_f1", mode: str = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            msg = f"`mode` must be 'max' or 'min', got {mode!r}."
            raise ValueError(msg)
        if not min_delta >= 0:
            msg = f"`min_delta` must be a non-negative number, got {min_delta!r}."
            raise ValueError(msg)
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.restored = False
        self._best_state: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """One entry per monitored metric in the checkpoints."""
        return f"BestCheckpoint[{self.monitor}]"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse FSDP, whose processes hold shards of the weights, not copies."""
        if isinstance(trainer.strategy, FSDPStrategy):
            msg = "BestCheckpoint keeps whole copies of the weights and does not work with FSDP; use strategy='ddp'."
            raise ValueError(msg)

    def _improves(self, value: float) -> bool:
        if self.best_score is None:
            return True
        if self.mode == "max":
            return value >= self.best_score + self.min_delta
        return value <= self.best_score - self.min_delta

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Copy the weights to the CPU when the monitored metric improved."""
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if math.isfinite(value) and self._improves(value):
            self.best_score, self.best_epoch = value, int(trainer.current_epoch)
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Load the best weights (or say why the last ones are kept)."""
        if self._best_state is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("validation_"))
            logger.warning(
                "No validation epoch logged %r, so the weights of the last epoch are kept. Selection needs validation "
                "cells (train_size < 1) with labels of that field%s.",
                self.monitor,
                f"; logged: {', '.join(logged)}" if logged else "",
            )
            return
        pl_module.load_state_dict(self._best_state)
        self.restored = True
        logger.info("kept the weights of epoch %d (%s = %.4f)", self.best_epoch, self.monitor, self.best_score)

    def state_dict(self) -> dict[str, Any]:
        """The best score, its epoch and weights (saved in the run's checkpoints)."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "best_state": self._best_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the selection of a resumed run."""
        self.best_score, self.best_epoch = state_dict["best_score"], state_dict["best_epoch"]
        self._best_state = state_dict["best_state"]
