"""Scheduled task mixing: each task's share of the loss moving from ``task_loss_weights`` to ``task_loss_weights_end``."""

from __future__ import annotations

import torch
from torch import Tensor

from scmulan.sentence import TASKS


def ramp_fraction(progress: float, start: float, end: float) -> float:
    """0 before ``start``, 1 from ``end`` on, linear in between (a step at ``start`` when ``start == end``)."""
    if progress >= end:
        return 1.0
    if progress < start:
        return 0.0
    return (progress - start) / (end - start)


def generation_fraction(shares: Tensor) -> Tensor:
    """Generation's fraction of the total task share (1 when every share is 0)."""
    total = shares.sum()
    return shares[TASKS.index("generation")] / total if total > 0 else shares.new_ones(())


def check_task_schedule(
    start: tuple[float, ...] | None, end: tuple[float, ...] | None, ramp: tuple[float, float]
) -> Tensor | None:
    """The end shares as a tensor, after checking the schedule (errors name the ``plan_kwargs`` to fix)."""
    if len(ramp) != 2 or not 0.0 <= ramp[0] <= ramp[1] <= 1.0:
        msg = f"`task_loss_ramp` must be two fractions of the run (start, end) with 0 <= start <= end <= 1, got {ramp}."
        raise ValueError(msg)
    if end is None:
        return None
    if start is None:
        msg = "`task_loss_weights_end` schedules the task shares: give `task_loss_weights` (the start shares) too."
        raise ValueError(msg)
    if len(end) != len(start) or min(end) < 0 or sum(end) <= 0:
        msg = (
            f"`task_loss_weights_end` must be {len(start)} non-negative shares with a positive sum (one per task of "
            f"{TASKS}), like `task_loss_weights`; got {tuple(end)}."
        )
        raise ValueError(msg)
    gen = TASKS.index("generation")
    if start[gen] > 0 and end[gen] <= 0:
        msg = (
            "`task_loss_weights_end` would switch generation off at the end of the run; give it a small positive "
            f"share instead (e.g. 0.1), got {tuple(end)}."
        )
        raise ValueError(msg)
    return torch.tensor(end, dtype=torch.float32)
