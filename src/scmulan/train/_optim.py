"""Optimisation pieces of the training plan: AdamW parameter groups, the learning-rate schedule, gradient clipping."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def clip_grad_norm(parameters: Iterable[Tensor], max_norm: float | None, *, sharded_root: Any = None) -> Tensor:
    """Total gradient norm before clipping; the gradients are scaled down to ``max_norm`` when it is given.

    The norm is always computed: training stops on a non-finite one. Without a gradient scaler (fp32, bf16) the
    gradients need no unscaling, so torch clips them directly; Lightning's own clipping refuses fused AdamW under
    its mixed-precision plugin even in bf16. Under FSDP every process holds a shard of each gradient, so the norm
    has to be taken over all shards by the root FSDP module (``FullyShardedDataParallel.clip_grad_norm_``), which
    Lightning's FSDP plugin does not do.

    Parameters
    ----------
    parameters
        The optimised parameters (gradients already reduced across processes).
    max_norm
        Largest total 2-norm (``None``: measure only).
    sharded_root
        The root :class:`~torch.distributed.fsdp.FullyShardedDataParallel` module when training with FSDP.

    Returns
    -------
    The total 2-norm of the gradients before clipping (the same value on every process).
    """
    limit = math.inf if max_norm is None else max_norm  # inf: the gradients are multiplied by 1
    if sharded_root is not None:
        return sharded_root.clip_grad_norm_(limit)
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(with_grad, limit)


def parameter_groups(net: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on the matrices of linear layers (incl. the heads) only.

    Embedding tables, LayerNorm weights and all biases are not decayed: decaying an embedding row pulls rare
    entities (a rare cell type, a new category added for fine-tuning) towards zero, and norms/biases are offsets.
    """
    decay, no_decay = [], []
    linear_weights = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Linear)}
    for p in net.parameters():
        if p.requires_grad:
            (decay if id(p) in linear_weights else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up from 0, then cosine decay to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
