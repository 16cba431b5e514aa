"""Run a training plan with Lightning: devices, precision, strategies, checkpoints, resuming, logs."""

from __future__ import annotations

import copy
import functools
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from torch.utils.data import DataLoader

from scmulan.sentence import pack_batch
from scmulan.train._checkpoints import latest_checkpoint
from scmulan.train._fsdp import BlockFSDPStrategy, full_state_dict
from scmulan.train._plan import CSentenceTrainingPlan
from scmulan.train._quiet import quietly
from scmulan.train._selection import BestCheckpoint

logger = logging.getLogger(__name__)


class _StepCheckpoint(ModelCheckpoint):
    """Every-N-steps checkpoints, except on the last batch of an epoch (the epoch-end checkpoint covers it).

    Lightning restores a checkpoint saved on an epoch's last training batch as a half-finished epoch and then
    loses the next epoch's data; end-of-epoch and truly mid-epoch checkpoints resume exactly.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, *args, **kwargs)


def _check_checkpoint_fits(path: str, plan: CSentenceTrainingPlan) -> None:
    """Refuse to resume from a checkpoint of a different model (another vocabulary or size), naming the fix."""
    if Path(path).is_dir():  # a sharded FSDP checkpoint (`state_dict_type="sharded"`): Lightning checks it itself
        return
    saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)["state_dict"]
    current = plan.state_dict()
    wrong = [k for k in current if k not in saved or tuple(saved[k].shape) != tuple(current[k].shape)]
    if wrong or set(saved) - set(current):
        key = (wrong or sorted(set(saved) - set(current)))[0]
        shapes = f"{tuple(saved[key].shape) if key in saved else 'absent'} vs {tuple(current[key].shape) if key in current else 'absent'}"
        msg = (
            f"The checkpoint {path} belongs to a different model ({key}: {shapes}, e.g. another vocabulary). "
            "Use a new `checkpoint_dir`, or `resume=False` to start afresh."
        )
        raise ValueError(msg)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``"auto"``: bf16 mixed precision on CUDA GPUs that support it, fp32 elsewhere."""
    if precision != "auto":
        return precision
    uses_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if uses_cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def resolve_strategy(strategy: str | Strategy) -> str | Strategy:
    """``"fsdp"`` (and ``"fsdp_cpu_offload"``): :class:`~scmulan.train.BlockFSDPStrategy`; anything else unchanged."""
    if strategy == "fsdp":
        return BlockFSDPStrategy()
    if strategy == "fsdp_cpu_offload":
        return BlockFSDPStrategy(cpu_offload=True)
    return strategy


def history_from_csv(log_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Logged metrics as ``{name: DataFrame}`` indexed by epoch (epoch-level) or step (step-level)."""
    path = Path(log_dir) / "metrics.csv"
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    history = {}
    for name in table.columns:
        if name in ("epoch", "step"):
            continue
        col = table[["epoch", "step", name]].dropna(subset=[name])
        if col.empty:
            continue
        index = "step" if name.endswith("_step") or name == "lr" else "epoch"
        frame = col.groupby(index)[name].last().to_frame()
        history[name] = frame
    return history


@quietly  # Lightning's warnings and banners a user cannot act on are silenced (see train._quiet)
def fit(
    plan: CSentenceTrainingPlan,
    train_dataset: torch.utils.data.IterableDataset,
    validation_dataset: torch.utils.data.IterableDataset | None = None,
    *,
    max_epochs: int | None = 10,
    max_steps: int = -1,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str | Strategy = "auto",
    num_nodes: int = 1,
    precision: str = "auto",
    accumulate_grad_batches: int = 1,
    gradient_clip_val: float | None = 1.0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every_n_steps: int | None = None,
    resume: bool = True,
    num_workers: int = 0,
    enable_progress_bar: bool = True,
    seed: int | None = 0,
    packing: bool = False,
    pack_tokens: int | None = None,
    compile: bool = False,
    select_best: str | None = None,
    **trainer_kwargs: Any,
) -> dict[str, pd.DataFrame]:
    """Train ``plan`` on streaming sentence datasets with Lightning.

    Parameters
    ----------
    plan
        The training plan (holds the network).
    train_dataset, validation_dataset
        :class:`~scmulan.sentence.TrainingSentenceDataset` objects (they yield whole batches).
    max_epochs, max_steps
        Stopping criteria (Lightning semantics).
    accelerator, devices, strategy, num_nodes
        Passed to :class:`lightning.pytorch.Trainer`: e.g. ``strategy="ddp"`` over several GPUs or nodes,
        ``"ddp_spawn"`` with ``accelerator="cpu", devices=2`` for two CPU processes. ``strategy="fsdp"`` shards
        parameters, gradients and optimiser state over the processes with one FSDP unit per transformer block
        (:class:`~scmulan.train.BlockFSDPStrategy`; a :class:`~lightning.pytorch.strategies.FSDPStrategy` object is
        used as given); Lightning's FSDP strategies launch processes like ``"ddp"`` (run as a script or with
        ``torchrun``, not in a notebook). FSDP trains a copy of the network: when ``fit`` returns, the full trained
        weights are gathered on every process and loaded into ``plan.net`` on the CPU.
    precision
        ``"auto"`` (bf16 mixed on CUDA, fp32 elsewhere) or any Lightning precision string.
    accumulate_grad_batches
        Batches per optimiser step.
    gradient_clip_val
        Gradient-norm clipping (``None``: off). The norm is checked whether or not it is clipped: a non-finite
        one stops training (:class:`~scmulan.train.NonFiniteLossError`) before the update.
    checkpoint_dir
        Run directory: checkpoints go to ``checkpoint_dir/checkpoints``, CSV logs to ``checkpoint_dir/logs``
        (a temporary directory when ``None``; no resuming then).
    checkpoint_every_n_steps
        Save a checkpoint every so many optimiser steps (always at the end of each epoch).
    resume
        Continue from the newest checkpoint in ``checkpoint_dir`` when there is one: weights, optimiser, scheduler,
        step, epoch, the position in the data and the random states (dropout) are restored, so the run ends with
        the same weights as one that never stopped, given the same number of processes (the logged average of the
        interrupted epoch covers the batches after the restart only).
    num_workers
        Data-loading worker processes.
    enable_progress_bar
        Show Lightning's progress bar.
    seed
        Seeds Python, NumPy and torch (``lightning.seed_everything``) before training.
    packing
        Run the transformer on the batch's sentences packed end to end into rows of about ``pack_tokens`` tokens
        (:func:`~scmulan.sentence.pack_batch`), with attention kept within each sentence (FlexAttention on CUDA, a
        dense mask elsewhere): almost no computed position is padding. The loss is the padded path's (same
        sentences, same objective); see the performance guide for when it pays.
    pack_tokens
        Tokens per packed row (default: four times the batch's longest sentence).
    compile
        ``torch.compile`` each transformer block (in place: checkpoints and saved models are unchanged). Pays on
        GPUs for runs of more than a few hundred steps; the first steps are slow while it compiles. Tested on one
        CPU process only (not with FSDP, and not measured on a GPU yet).
    select_best
        A validation metric to select the weights by, e.g. ``"validation_cell_type_macro_f1"`` (higher is better;
        a name ending in ``_loss`` is minimised): the plan ends with the weights of the epoch where it was best
        (:class:`~scmulan.train.BestCheckpoint`); ``None``: the last epoch's weights. Needs a ``validation_dataset``.
    **trainer_kwargs
        Other :class:`lightning.pytorch.Trainer` arguments (``callbacks``, ``limit_train_batches``…). ``logger``
        adds loggers to the CSV one that ``history_`` is read from, e.g.
        ``logger=lightning.pytorch.loggers.TensorBoardLogger(run_dir)``.

    Returns
    -------
    The logged metrics (see :func:`history_from_csv`).
    """
    if select_best is not None and validation_dataset is None:
        msg = f"select_best={select_best!r} needs validation cells: pass a `validation_dataset` (train_size < 1)."
        raise ValueError(msg)
    if seed is not None:
        pl.seed_everything(seed, workers=True, verbose=False)
    tmp = None
    if checkpoint_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="scmulan_train_")
        checkpoint_dir, resume = tmp.name, False
    run_dir = Path(checkpoint_dir)
    checkpoint_dir = run_dir / "checkpoints"  # logs go to run_dir / "logs"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    plan.train_dataset = train_dataset
    plan.checkpoint_dir = checkpoint_dir

    callbacks = list(trainer_kwargs.pop("callbacks", []))
    if select_best is not None:
        callbacks.append(BestCheckpoint(select_best, mode="min" if select_best.endswith("_loss") else "max"))
    # The newest checkpoint is kept: one at the end of every epoch and, optionally, one every N optimiser steps;
    # their names carry the step, and resuming picks the highest.
    callbacks += [
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="epoch{epoch}-step{step}",
            auto_insert_metric_name=False,
            save_top_k=1,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
        ),
    ]
    if checkpoint_every_n_steps:
        callbacks.insert(
            0,
            _StepCheckpoint(
                dirpath=checkpoint_dir,
                filename="step{step}",
                auto_insert_metric_name=False,
                every_n_train_steps=checkpoint_every_n_steps,
                save_top_k=1,
            ),
        )
    csv = CSVLogger(save_dir=run_dir, name="logs", version="")
    loggers = trainer_kwargs.pop("logger", None)
    loggers = [csv] if loggers in (None, True) else ([csv] + (loggers if isinstance(loggers, list) else [loggers]))
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator=accelerator,
        devices=devices,
        strategy=resolve_strategy(strategy),
        num_nodes=num_nodes,
        precision=resolve_precision(precision, accelerator),
        accumulate_grad_batches=accumulate_grad_batches,
        gradient_clip_val=gradient_clip_val,
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=trainer_kwargs.pop("enable_model_summary", False),
        log_every_n_steps=trainer_kwargs.pop("log_every_n_steps", 10),
        num_sanity_val_steps=trainer_kwargs.pop("num_sanity_val_steps", 0),
        **trainer_kwargs,
    )
    loader_kwargs = {"batch_size": None, "num_workers": num_workers, "pin_memory": torch.cuda.is_available()}
    if packing:  # packed in the loader (its workers when there are some), on the CPU
        loader_kwargs["collate_fn"] = functools.partial(pack_batch, row_tokens=pack_tokens)
    if compile:
        for block in plan.net.blocks:
            block.compile(dynamic=True)
    train_loader = _RandomStateNeutralLoader(train_dataset, **loader_kwargs)
    val_loader = None
    if validation_dataset is not None:
        val_loader = _RandomStateNeutralLoader(validation_dataset, **loader_kwargs)
    ckpt_path = latest_checkpoint(checkpoint_dir) if resume else None
    if ckpt_path:
        _check_checkpoint_fits(ckpt_path, plan)
    if ckpt_path:
        logger.info("resuming from %s", ckpt_path)
    metrics = Path(csv.log_dir) / "metrics.csv"
    earlier = pd.read_csv(metrics) if ckpt_path and metrics.exists() else None  # the CSV logger starts afresh
    plan.train()  # inference leaves the network in eval mode; Lightning keeps whatever mode it finds
    sharded = isinstance(trainer.strategy, FSDPStrategy)
    if sharded:
        # FSDP replaces the blocks by wrappers and leaves every parameter a view of this process's shard: it gets a
        # copy, and the network keeps its own modules and is given the trained weights afterwards.
        net = plan.net.to("cpu")
        plan.net = copy.deepcopy(net)
    try:
        trainer.fit(plan, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
        if sharded:
            state = full_state_dict(trainer.strategy)
            net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    finally:
        if sharded:
            plan.net = net
    if earlier is not None and trainer.is_global_zero and metrics.exists():
        resumed = pd.read_csv(metrics)
        first = resumed["step"].min() if len(resumed) else float("inf")
        pd.concat([earlier[earlier["step"] < first], resumed]).to_csv(metrics, index=False)
    history = history_from_csv(csv.log_dir)
    if tmp is not None:
        tmp.cleanup()
    return history


class _RandomStateNeutralLoader(DataLoader):
    """A DataLoader whose iterators leave torch's global random state as they found it.

    A new iterator (every epoch, and the first one after resuming) draws a base seed from torch's global generator.
    A run resumed from a checkpoint saved at the end of an epoch would then start the next epoch one draw behind
    the run that never stopped, and its dropout masks would differ. The datasets draw from their own seeded
    generators, so nothing here needs the global draw. (A ``generator=`` of the loader's own would do the same, but
    a torch generator cannot be sent to ``ddp_spawn`` processes.)
    """

    def _get_iterator(self) -> Any:
        state = torch.get_rng_state()
        try:
            return super()._get_iterator()
        finally:
            torch.set_rng_state(state)
