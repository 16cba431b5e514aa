"""The Lightning training plan: objective, optimiser, schedule, clipping, per-task logging, exact resuming."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor

from scmulan.nn.model import CSentenceTransformer
from scmulan.sentence import TASKS, forward_heads
from scmulan.train._generation_objective import combine, heads_with_levels, next_entity_objective
from scmulan.train._label_metrics import confusion_counts, label_predictions, macro_f1
from scmulan.train._objective import LabelTargets, set_objective, task_balanced_weights
from scmulan.train._optim import clip_grad_norm, parameter_groups, warmup_cosine
from scmulan.train._rng import rng_state, set_rng_state
from scmulan.train._task_schedule import check_task_schedule, generation_fraction, ramp_fraction

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss, the gradients or the weights became NaN or infinite."""


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
    labels
        Metadata fields and their categories: label positions are trained with a softmax over the label's field
        (see :class:`~scmulan.train.LabelTargets`), and each validation epoch logs the macro-F1 of every field's
        teacher-forced predictions in the annotation sentences, ``validation_<field>_macro_f1`` (e.g.
        ``validation_cell_type_macro_f1``; see the notes); ``None``: the original's BCE everywhere, no macro-F1.
    task_loss_weights
        Share of the loss of each task in ``scmulan.sentence.TASKS`` order: every task present in a batch
        contributes its weight, split among its sentences (:func:`~scmulan.train.task_balanced_weights`); ``None``:
        every sentence alike (the batch mean, so tasks weigh what their sampled share of sentences weighs).
    task_loss_weights_end
        The task shares at the end of the run (scheduled mixing, e.g. ``(0.1, 1, 0.1)`` for an annotation finish);
        they replace ``task_loss_weights`` over the steps given by ``task_loss_ramp``, see the notes. ``None``
        (default): the shares stay ``task_loss_weights`` for the whole run.
    task_loss_ramp
        Fractions ``(start, end)`` of the run's optimiser steps over which the shares move linearly from
        ``task_loss_weights`` to ``task_loss_weights_end``; ``start == end`` switches at that point (e.g.
        ``(2/3, 2/3)``: the last third of the steps with the end shares).

    Notes
    -----
    **Loss weights.** The original scMulan minimised ``2222 * mean BCE + 200 * MSE`` over all positions of a batch.
    ``2222 * mean`` is the BCE summed over its 2,222-entity vocabulary, which is what ``entity`` is here for any
    vocabulary size, so ``entity_weight = 1`` is the original's 2222 for its vocabulary. We average per sentence
    before averaging sentences, so a 3-token annotation target counts as much as a 1,000-gene generation target
    (with a plain mean over positions, generation positions outnumber annotation ones ~100:1). The default
    ``value_weight = 1`` keeps the value term (≈ 1–10 for levels 1..10) a minor part of the entity term early on
    and comparable to it once the entity loss has converged (a few units per position); the original's 200 made
    the value term dominate, so the entity head, which annotation and generation decode from, learnt slowly.

    **Scheduled task mixing.** With ``task_loss_weights_end``, each training step uses the shares
    ``w = w_start + r * (w_end - w_start)``, where ``r`` is 0 before ``task_loss_ramp[0]`` of the run's optimiser
    steps, 1 after ``task_loss_ramp[1]``, and linear in between (the run's length is Lightning's
    ``estimated_stepping_batches``, as for the learning-rate schedule). Only the shares' ratios matter. The level
    (value) loss, which only generation sentences carry, is scaled by the ratio of generation's share of the total
    then to its share at the start, so a finish that lowers generation's share lowers its level term alike.
    Generation's end share must be positive when its start share is: it is never switched off. Validation losses
    use the start shares, so that they compare across epochs.

    **Schedule.** Linear warm-up over ``warmup_steps`` optimiser steps, but at most 10 % of the run's steps (at
    least one), then cosine decay to ``min_lr_ratio * lr`` at the last step: a short run or a fine-tuning run spends
    most of its steps near the peak learning rate instead of warming up.

    **Gradients.** Clipping and a finiteness check happen in :meth:`configure_gradient_clipping`: a non-finite
    gradient norm (fp32/bf16) stops training with :class:`NonFiniteLossError` before the update, so the weights
    and checkpoints stay finite; a checkpoint is never written with non-finite weights.

    **Validation macro-F1.** At each label position of a validation annotation sentence the prediction is the
    arg-max of the entity logits among the categories of the label's field, given the true earlier labels (teacher
    forcing: the fine type is predicted after the true coarse type). True/false positives and false negatives per
    category are summed over the epoch (and over processes), and the macro-F1 of each field is
    :func:`sklearn.metrics.f1_score`'s ``average="macro"`` over the categories that occur among the targets or
    predictions. :class:`~scmulan.train.BestCheckpoint` can keep the weights of the epoch where it was highest.

    **Resuming.** Checkpoints carry the position in the streaming data and every process's random states (torch,
    CUDA, NumPy, Python), so a resumed run draws the same dropout masks as one that never stopped.
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
        labels: LabelTargets | None = None,
        task_loss_weights: tuple[float, ...] | None = None,
        task_loss_weights_end: tuple[float, ...] | None = None,
        task_loss_ramp: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.net = net
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.entity_weight, self.value_weight, self.positives = entity_weight, value_weight, positives
        self.freeze_trunk = freeze_trunk
        self.labels = labels
        self.task_loss_weights = None if task_loss_weights is None else torch.tensor(task_loss_weights)
        self.task_loss_weights_end = check_task_schedule(task_loss_weights, task_loss_weights_end, task_loss_ramp)
        self.task_loss_ramp = (float(task_loss_ramp[0]), float(task_loss_ramp[1]))
        self._total_steps: int | None = None  # set by configure_optimizers (the run's optimiser steps)
        if freeze_trunk:
            for module in (*net.blocks, net.ln_f):
                module.requires_grad_(False)
        self.train_dataset = None  # set by `fit` so that the data position can be checkpointed
        self._label_counts: Tensor | None = None  # (3, V) label confusion counts of the current validation epoch
        self.checkpoint_dir = None  # set by `fit`: where a NaN-loss error points the user

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        nxt, groups = None, batch["groups"]
        if self.net.config.generation_objective == "next":  # generation sentences: next entity + level head
            entity_logits, values, level_logits = heads_with_levels(self.net, batch)
            nxt = next_entity_objective(entity_logits, level_logits, batch["ids"], batch["levels"], groups)
            groups = nxt.other_groups  # the label positions are left to the set objective
        else:
            entity_logits, values = forward_heads(self.net, batch)  # padded layout; packed rows if the batch has them
        weights, value_scale = None, 1.0
        if self.task_loss_weights is not None:
            shares = self.task_loss_weights
            if stage == "train" and self.task_loss_weights_end is not None:
                shares = self.scheduled_task_loss_weights(self.global_step)
                value_scale = float(generation_fraction(shares) / generation_fraction(self.task_loss_weights))
            weights = task_balanced_weights(batch["task"], shares.to(entity_logits.device))
        value_weight = self.value_weight * value_scale
        labels = self.labels.to(entity_logits.device) if self.labels is not None else None
        out = set_objective(
            entity_logits,
            values,
            batch["ids"],
            batch["levels"],
            groups,
            entity_weight=self.entity_weight,
            value_weight=value_weight,
            positives=self.positives,
            labels=labels,
            sentence_weight=weights,
        )
        if nxt is not None:
            out = combine(
                out, nxt, entity_weight=self.entity_weight, value_weight=value_weight, sentence_weight=weights
            )
        if stage == "validation" and self._label_counts is not None:
            rows = batch["task"] == TASKS.index("annotation")
            targets, predicted = label_predictions(entity_logits.detach(), batch["ids"], batch["groups"], labels, rows)
            self._label_counts += confusion_counts(targets, predicted, self._label_counts.shape[1])
        finite = bool(torch.isfinite(out.loss))
        if self._trainer is not None and self.trainer.world_size > 1:
            # one process stopping alone would leave the others waiting in the next collective
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            value = out.loss.item() if not torch.isfinite(out.loss) else "non-finite on another process"
            self._stop(f"The {stage} loss became {value}", "training stopped")
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

    def scheduled_task_loss_weights(self, step: int) -> Tensor:
        """The task shares used at optimiser step ``step`` (see the notes on scheduled task mixing).

        Parameters
        ----------
        step
            Optimiser steps taken so far.

        Returns
        -------
        ``(n_tasks,)`` shares in ``scmulan.sentence.TASKS`` order (``task_loss_weights`` without a schedule).
        """
        start = self.task_loss_weights
        if start is None or self.task_loss_weights_end is None:
            return start
        total = self._total_steps
        if total is None:
            total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        return start + ramp_fraction(step / total, *self.task_loss_ramp) * (self.task_loss_weights_end - start)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step's loss."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Validation loss of one batch."""
        return self._shared_step(batch, "validation")

    def on_validation_epoch_start(self) -> None:
        """Start the label confusion counts of this validation epoch (on every process, even one without labels)."""
        if self.labels is not None:
            size = self.labels.field_of.shape[0]
            self._label_counts = torch.zeros(3, size, dtype=torch.long, device=self.device)

    def on_validation_epoch_end(self) -> None:
        """Log ``validation_<field>_macro_f1`` for every field with a label among this epoch's targets/predictions."""
        counts, self._label_counts = self._label_counts, None
        if counts is None:
            return
        if self._trainer is not None and self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")  # the same totals on every process
        f1, occurred = macro_f1(counts, self.labels.members.to(counts.device))
        for k in torch.nonzero(occurred).flatten().tolist():
            name = f"validation_{self.labels.field_name(k)}_macro_f1"
            self.log(name, f1[k], on_step=False, on_epoch=True, sync_dist=True)  # equal everywhere: a no-op mean

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with decay groups and a warm-up + cosine schedule stepped every optimiser step.

        The warm-up is capped at 10 % of the run's optimiser steps (see the class notes). AdamW is fused on CUDA,
        except when a gradient scaler (``precision="16-mixed"``) must unscale the gradients before clipping, or
        when FSDP shards the parameters.
        """
        opt = torch.optim.AdamW(
            parameter_groups(self.net, self.weight_decay),
            lr=self.lr,
            betas=self.betas,
            fused=self._fused_adamw() or None,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        self._total_steps = total
        warmup = min(self.warmup_steps, max(1, total // 10))

        def schedule(step: int) -> float:
            return warmup_cosine(step, warmup, total, self.min_lr_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _grad_scaler(self) -> Any:
        """The precision plugin's gradient scaler (fp16 mixed precision), or ``None``."""
        return getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None

    def _sharded(self) -> bool:
        """Whether FSDP shards the parameters and gradients."""
        return self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy)

    def _fused_adamw(self) -> bool:
        return self.device.type == "cuda" and self._grad_scaler() is None and not self._sharded()

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients (by norm unless Lightning was asked for ``"value"``) and stop on a non-finite norm.

        Called by Lightning before every optimiser step, after the gradients were accumulated, reduced across
        processes and, under fp16 mixed precision, unscaled. See :func:`clip_grad_norm` for why this bypasses
        Lightning's precision plugins. With a gradient scaler (fp16), non-finite gradients are expected now and then:
        the scaler skips that step and lowers its scale, so they do not stop training.
        """
        scaled = self._grad_scaler() is not None
        by_value = gradient_clip_algorithm == "value"
        max_norm = gradient_clip_val if gradient_clip_val and not by_value else None
        if scaled and max_norm is None and not by_value:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        root = self.trainer.strategy.model if self._sharded() else None
        norm = clip_grad_norm(params, max_norm, sharded_root=root)
        if by_value and gradient_clip_val:
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        if not scaled and not torch.isfinite(norm):
            self._stop(
                f"The gradient norm became {norm.item()} with a finite loss", "training stopped before the update"
            )

    def _stop(self, what: str, stopped: str) -> NoReturn:
        """Raise :class:`NonFiniteLossError` naming the step and the newest checkpoint whose weights are finite."""
        from scmulan.train._checkpoints import latest_finite_checkpoint

        last = latest_finite_checkpoint(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        where = f" The last good checkpoint is {last}." if last else ""
        msg = (
            f"{what} at step {self.global_step} (epoch {self.current_epoch}); {stopped}.{where} "
            "Lower the learning rate or check the data for extreme values."
        )
        raise NonFiniteLossError(msg)

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
        """Refuse non-finite weights; store the epoch, the batches of it already trained on and the random states."""
        tensors = [t for t in (*self.net.parameters(), *self.net.buffers()) if t.is_floating_point()]
        finite = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True
        if self.trainer.world_size > 1:  # FSDP: each process checks its shards
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            self._stop("The weights became non-finite (NaN or inf)", "training stopped without saving them")
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        checkpoint["scmulan_data_position"] = {"epoch": self.current_epoch, "batches": int(progress.processed)}
        checkpoint["scmulan_rng_states"] = self._all_rng_states()

    def _all_rng_states(self) -> list[dict[str, Any]]:
        """Every process's random states, by global rank (every process calls this when a checkpoint is saved)."""
        state = rng_state()
        world = self.trainer.world_size
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list[Any] = [None] * world
            torch.distributed.all_gather_object(states, state)
            return states
        return [state]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume the streaming dataset where the checkpoint left it, with the random states it had then."""
        position = checkpoint.get("scmulan_data_position")
        if position is not None and self.train_dataset is not None:
            epoch, batches = position["epoch"], position["batches"]
            if batches >= len(self.train_dataset):  # saved at the end of an epoch: resume with the next one
                epoch, batches = epoch + 1, 0
            self.train_dataset.epoch = epoch
            self.train_dataset.start_batch = batches
        states = checkpoint.get("scmulan_rng_states")
        if states and self._trainer is not None:
            if len(states) == self.trainer.world_size:
                set_rng_state(states[self.global_rank])
            else:
                logger.info(
                    "random states not restored: the checkpoint was saved by %d processes, this run has %d",
                    len(states),
                    self.trainer.world_size,
                )
