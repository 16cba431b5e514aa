"""The Lightning training plan: objective, optimiser, schedule, per-task logging, resumable data position."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from scmulan.nn.model import CSentenceTransformer
from scmulan.sentence._tasks import TASKS
from scmulan.train._objective import set_objective


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


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


class CSentenceTrainingPlan(pl.LightningModule):
    """Training plan for :class:`~scmulan.nn.CSentenceTransformer` with the multitask set objective.

    Parameters
    ----------
    net
        The transformer to train.
    lr
        Peak learning rate.
    weight_decay
        AdamW weight decay of linear-layer matrices (see :func:`parameter_groups`).
    betas
        AdamW betas.
    warmup_steps
        Optimiser steps of linear warm-up.
    min_lr_ratio
        Final learning rate of the cosine decay, as a fraction of ``lr``.
    entity_weight
        Weight of the entity loss (BCE summed over the vocabulary, averaged over target positions and sentences).
    value_weight
        Weight of the value loss (MSE of the remaining genes' levels 1..10).
    positives
        ``"mean"`` (default): each position's target entities share one unit of positive weight, so a generation
        position with hundreds of remaining genes weighs as much as an annotation position; ``"sum"``: the
        original's plain multi-hot BCE (see :func:`~scmulan.train.set_objective`).
    freeze_trunk
        Train only the embeddings and the heads (fine-tuning on little data); the blocks and final norm stay fixed.

    Notes
    -----
    The original scMulan minimised ``2222 * mean BCE + 200 * MSE`` over all positions of a batch. ``2222 * mean`` is
    the BCE summed over its 2,222-entity vocabulary, which is what ``entity`` is here for any vocabulary size. We
    average per sentence before averaging sentences, so a 3-token annotation target counts as much as a
    1,000-gene generation target (with a plain mean over positions, generation positions outnumber annotation
    ones ~100:1). The default ``value_weight = 1`` keeps the value term (≈ 1–10 for levels 1..10) a minor part of
    the entity term early on and comparable to it once the entity loss has converged (a few units per position);
    the original's 200 made the value term dominate.
    """

    def __init__(
        self,
        net: CSentenceTransformer,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        entity_weight: float = 1.0,
        value_weight: float = 1.0,
        positives: str = "mean",
        freeze_trunk: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.entity_weight, self.value_weight, self.positives = entity_weight, value_weight, positives
        self.freeze_trunk = freeze_trunk
        if freeze_trunk:
            for module in (*net.blocks, net.ln_f):
                module.requires_grad_(False)
        self.train_dataset = None  # set by `fit` so that the data position can be checkpointed
        self.checkpoint_dir = None  # set by `fit`: where a NaN-loss error points the user

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        hidden = self.net(batch["ids"], batch["levels"])  # right-padded: plain causal attention
        entity_logits, values = self.net.heads(hidden)
        out = set_objective(
            entity_logits,
            values,
            batch["ids"],
            batch["levels"],
            batch["groups"],
            entity_weight=self.entity_weight,
            value_weight=self.value_weight,
            positives=self.positives,
        )
        if not torch.isfinite(out.loss):
            from scmulan.train._fit import latest_checkpoint

            last = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir is not None else None
            where = f" The last good checkpoint is {last}." if last else ""
            msg = (
                f"The {stage} loss became {out.loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                f"training stopped.{where} Lower the learning rate or check the data for extreme values."
            )
            raise NonFiniteLossError(msg)
        B = batch["ids"].shape[0]
        # Epoch averages under plain names (history_["train_loss"] exists after any run, however short), plus the
        # step-level training loss for learning curves.
        epoch = {"on_step": False, "on_epoch": True, "batch_size": B}
        self.log(f"{stage}_loss", out.loss, prog_bar=True, sync_dist=True, **epoch)
        self.log(f"{stage}_entity_loss", out.entity, sync_dist=True, **epoch)
        self.log(f"{stage}_value_loss", out.value, sync_dist=True, **epoch)
        if stage == "train":
            self.log("train_loss_step", out.loss, on_step=True, on_epoch=False, batch_size=B)
        # Every task is logged on every step and rank, weighted by its number of sentences in the batch (0 when
        # absent), so the epoch averages are exact and the same keys are synchronised across processes.
        tasks = batch["task"]
        for k, name in enumerate(TASKS):
            sel = tasks == k
            n = int(sel.sum())
            entity = out.per_sentence_entity[sel].nanmean() if n else out.loss.new_zeros(())
            hits = out.hits[sel].nanmean() if n else out.loss.new_zeros(())
            per_task = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": True}
            self.log(f"{stage}_entity_loss_{name}", entity.detach(), **per_task)
            self.log(f"{stage}_accuracy_{name}", hits, **per_task)
        return out.loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step's loss."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Validation loss of one batch."""
        return self._shared_step(batch, "validation")

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with decay groups and a warm-up + cosine schedule stepped every optimiser step."""
        fused = self.device.type == "cuda"
        opt = torch.optim.AdamW(
            parameter_groups(self.net, self.weight_decay), lr=self.lr, betas=self.betas, fused=fused or None
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.warmup_steps, max(1, total // 10))

        def schedule(step: int) -> float:
            return warmup_cosine(step, warmup, total, self.min_lr_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        """Put the network in training mode (dropout on): it may come from inference, which leaves it in eval mode."""
        self.net.train()

    # -- resumable data position --------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """Point the streaming dataset at this epoch, from its first batch."""
        if self.train_dataset is not None:
            self.train_dataset.epoch = self.current_epoch
            self.train_dataset.start_batch = 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the epoch and the number of batches of it already trained on."""
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        checkpoint["scmulan_data_position"] = {"epoch": self.current_epoch, "batches": int(progress.processed)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume the streaming dataset where the checkpoint left it."""
        position = checkpoint.get("scmulan_data_position")
        if position is not None and self.train_dataset is not None:
            epoch, batches = position["epoch"], position["batches"]
            if batches >= len(self.train_dataset):  # saved at the end of an epoch: resume with the next one
                epoch, batches = epoch + 1, 0
            self.train_dataset.epoch = epoch
            self.train_dataset.start_batch = batches
