"""Training and fine-tuning (recipes of ``SCMULAN``): the data split, the task mix, the objective, the run."""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scmulan._validation import needs_normalization
from scmulan._warnings import warn
from scmulan.model._debin import debinning_table
from scmulan.model._gene_counts import gene_count_table, recording_gene_counts
from scmulan.model._parts import ModelParts
from scmulan.model._training_data import check_labels, split, task_spec
from scmulan.model._training_defaults import auto_epochs, default_task_shares
from scmulan.sentence import TASKS, CellSource, as_sources

logger = logging.getLogger(__name__)

#: Objective defaults of ``train`` (``plan_kwargs``), chosen by the ablation in ``benchmarks/annotation_ablation.py``
#: (see the annotation page of the user guide); ``task_loss_weights="auto"``: ``default_task_shares``.
DEFAULT_PLAN: dict[str, Any] = {
    "label_loss": "softmax",
    "logit_adjustment": 0.0,
    "label_smoothing": 0.0,
    "task_loss_weights": "auto",
}
#: Sentence options of ``train`` (``data_kwargs``) and their defaults.
DEFAULT_DATA: dict[str, Any] = {
    "metadata_fields": None,
    "context_dropout": 0.5,
    "gene_dropout": 0.0,
    "chunk_size": 2048,
    "num_workers": 0,
}
#: Options that were keywords of ``train`` itself before they were grouped (still accepted, with a FutureWarning).
_MOVED_TO_PLAN = ("weight_decay", "warmup_steps", "entity_weight", "value_weight", "positives", "freeze_trunk")

#: The ``train`` options, documented once: the model's method and the recipe share this docstring.
TRAIN_DOC = """Train on the registered AnnData (and an optional corpus streamed from disk) with the multitask objective.

The common call is short (``model.train(max_epochs=30)``); options are grouped as in scvi-tools: the objective in
``plan_kwargs``, the sentences in ``data_kwargs``, the run in ``**trainer_kwargs``.

Parameters
----------
max_epochs
    Passes over the training cells. ``"auto"``: enough passes for at least 750 optimiser steps, and at least 10
    (:func:`scmulan.model.default_epochs`: 47 for 504 training cells at batch 32, 150 for 150 cells, 10 from 7,500
    cells on); with ``max_steps`` given, ``max_steps`` alone decides.
tasks
    Any of ``"generation"``, ``"annotation"``, ``"metadata"``; for each sentence one requested task is sampled
    among those the cell has labels for (a cell without cell types still trains generation). Default: every task
    the registered fields support (generation always; annotation with a cell-type field; metadata with another
    field), or all three when ``task_weights`` is given.
task_weights
    Relative weight of each requested task (default: equal).
batch_size
    Sentences per batch (per device).
lr
    Peak learning rate; default by width: 3e-3 up to 256 (``tiny``, ``small``), 1e-3 up to 768 (``base``), 3e-4
    beyond (``scmulan-v1``).
train_size, validation_size
    Fractions of the registered cells for training and validation (the rest is held out). With at least 10
    labelled validation cells, training ends by calibrating the annotation confidence on them.
corpus
    Further cells streamed from disk, with the same ``obs`` columns as the registered AnnData: ``.h5ad`` files
    (pretraining shards, read backed), a TileDB-SOMA ``ExperimentAxisQuery`` (e.g. of the CELLxGENE Census),
    ``Experiment`` or experiment URI (needs ``pip install 'scmulan[dataloaders]'``), an annbatch collection (its
    path, zarr group or ``DatasetCollection``), a :class:`~scmulan.sentence.SomaSource` or
    :class:`~scmulan.sentence.AnnbatchSource` built with other ``obs`` columns or gene names, or a list of these.
    Raw counts are normalised on the fly.
accelerator, devices
    Lightning settings: e.g. ``accelerator="gpu", devices=8`` (with ``strategy="ddp"``).
seed
    Seed of the data split, the task sampling and the run.
plan_kwargs
    The objective (see :doc:`/user_guide/annotation`): ``label_loss`` (``"softmax"``, the default: a softmax over
    each label field's categories at label positions; ``"bce"``: the original's sigmoid over the whole
    vocabulary), ``logit_adjustment`` (τ of the training-label prior added to the label logits during training),
    ``label_smoothing``, ``task_loss_weights`` (each task's share of the loss in (generation, annotation,
    metadata) order; ``None``: the plain batch mean; ``"auto"``, the default: ``(1, 3, 1)`` for networks narrower
    than 128 (``tiny``), equal shares otherwise, see ``scmulan.model.default_task_shares``) — defaults in
    ``DEFAULT_PLAN`` —, ``task_loss_weights_end`` and ``task_loss_ramp`` (scheduled mixing: the shares at the end of the run, and the fractions of the run over
    which they replace ``task_loss_weights``; default: no schedule), and the optimisation:
    ``weight_decay`` (0.01, AdamW on linear-layer matrices only), ``warmup_steps`` (100, capped at 10 % of the
    run), ``entity_weight`` and ``value_weight`` (1, the weights of the entity and value losses),
    ``positives`` (``"mean"``: each position's target entities share one unit of weight; ``"sum"``: the
    original's plain multi-hot BCE), ``freeze_trunk`` (train only the embeddings and heads), and any other
    :class:`~scmulan.train.CSentenceTrainingPlan` argument.
data_kwargs
    The training sentences: ``metadata_fields`` (fields the metadata task predicts, in decoding order; default:
    every registered field other than the cell types), ``context_dropout`` (0.5: probability of leaving out each
    known metadata token from a sentence's context), ``gene_dropout`` (0: probability of leaving out each gene
    of an annotation or metadata sentence, see :class:`~scmulan.sentence.TaskSpec`), ``chunk_size`` (2048 cells
    read and bucketed by length together), ``num_workers`` (0 data-loading workers).
**trainer_kwargs
    The run (:func:`scmulan.train.fit`, then :class:`lightning.pytorch.Trainer`): ``strategy`` (``"ddp"`` runs
    the calling script again in each process, save on rank 0 only; ``"fsdp"`` shards weights, gradients and
    optimiser state), ``precision`` (``"auto"``: bf16 mixed precision on GPUs), ``accumulate_grad_batches``,
    ``gradient_clip_val`` (1.0; ``None``: off), ``checkpoint_dir``, ``checkpoint_every_n_steps`` and ``resume``
    (checkpoints every N optimiser steps and at each epoch end; rerunning the same call resumes from the last one
    and ends with the weights of a run that never stopped), ``packing`` (sentences packed into fixed-token rows),
    ``max_steps``, ``callbacks``, ``logger`` (added to the CSV log that ``history_`` is read from)…  A non-finite
    loss stops training before the update (:class:`~scmulan.train.NonFiniteLossError`).
"""


@dataclass
class TrainingRun:
    """What a training run changed: the history, the split, the tasks learnt, the de-binning and gene-count tables."""

    history: dict[str, pd.DataFrame]
    train_indices: np.ndarray
    validation_indices: np.ndarray
    test_indices: np.ndarray
    trained_tasks: list[str]
    metadata_fields: list[str]
    debin_table: np.ndarray | None
    gene_counts: np.ndarray | None
    annotation_trained: bool


def group_options(
    plan_kwargs: Mapping[str, Any] | None, data_kwargs: Mapping[str, Any] | None, trainer_kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The objective, sentence and run options, with the keywords ``train`` took before grouping moved to theirs."""
    plan, data, trainer = dict(plan_kwargs or {}), {**DEFAULT_DATA, **(data_kwargs or {})}, dict(trainer_kwargs)
    unknown = set(data) - set(DEFAULT_DATA)
    if unknown:
        msg = f"`data_kwargs` has unknown options {sorted(unknown)}; the options are {list(DEFAULT_DATA)}."
        raise ValueError(msg)
    for name in [k for k in trainer if k in _MOVED_TO_PLAN or k in DEFAULT_DATA]:
        group, target = ("plan_kwargs", plan) if name in _MOVED_TO_PLAN else ("data_kwargs", data)
        warn(
            f"`train({name}=...)` is now spelt `train({group}={{{name!r}: ...}})`; the old spelling will be removed.",
            FutureWarning,
        )
        target[name] = trainer.pop(name)
    return plan, data, trainer


def train(
    parts: ModelParts,
    adata: AnnData | None,
    max_epochs: int | str | None = "auto",
    *,
    tasks: Sequence[str] | None = None,
    task_weights: Sequence[float] | None = None,
    batch_size: int = 32,
    lr: float | None = None,
    train_size: float = 0.9,
    validation_size: float | None = None,
    corpus: Any = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    seed: int = 0,
    plan_kwargs: dict[str, Any] | None = None,
    data_kwargs: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> TrainingRun:
    from scmulan.sentence import TrainingSentenceDataset
    from scmulan.train import CSentenceTrainingPlan, fit

    if adata is None:
        msg = "This model has no training data attached; use `model.finetune(adata)` to train it on your data."
        raise ValueError(msg)
    plan_options, data, trainer_kwargs = group_options(plan_kwargs, data_kwargs, trainer_kwargs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("accumulate_grad_batches", trainer_kwargs.get("accumulate_grad_batches", 1))
    if (
        max_epochs is not None
        and max_epochs != "auto"
        and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int | np.integer) or max_epochs < 1)
    ):
        msg = (
            "`max_epochs` must be a positive integer, 'auto' (enough epochs for the reference's size) or None "
            f"(then `max_steps` decides), got {max_epochs!r}."
        )
        raise ValueError(msg)
    spec = task_spec(parts, tasks, task_weights, data["metadata_fields"], data["context_dropout"], data["gene_dropout"])
    train_idx, val_idx, test_idx = split(adata.n_obs, train_size, validation_size, seed)
    main = CellSource(
        adata, parts.vocab, obs_keys=parts.obs_keys, layer=parts.layer, gene_symbols=parts.gene_symbols_key
    )
    sources, indices = [main], [train_idx]
    has_corpus = corpus is not None and not (isinstance(corpus, list | tuple) and not corpus)
    for shard in (
        as_sources(corpus, parts.vocab, obs_keys=parts.obs_keys, gene_symbols=parts.gene_symbols_key)
        if has_corpus
        else []
    ):
        if list(shard.obs_keys) != list(parts.obs_keys):
            msg = f"A corpus source reads the fields {list(shard.obs_keys)}; build it with `obs_keys` for the "
            msg += f"registered fields, in this order: {list(parts.obs_keys)}."
            raise ValueError(msg)
        first = shard.read(np.arange(min(256, shard.n_obs)))[0]
        shard.normalize = needs_normalization(first, name="the first cells of a corpus source")
        sources.append(shard)
        indices.append(None)
    check_labels(spec, sources, indices)
    if max_epochs == "auto":  # with max_steps given, max_steps alone decides
        step_size = batch_size * trainer_kwargs.get("accumulate_grad_batches", 1)
        max_epochs = None if "max_steps" in trainer_kwargs else auto_epochs(sources, indices, step_size)
    common = {
        "end_id": parts.vocab.end_id,
        "pad_id": parts.vocab.pad_id,
        "batch_size": batch_size,
        "chunk_size": data["chunk_size"],
        "layout": parts.layout,
        "seed": seed,
    }
    task_ids = {parts.layout.prompt_token(t): parts.vocab.task_id(parts.layout.prompt_token(t)) for t in TASKS}
    block = 1 if len(sources) == 1 else 256
    fit_debinning = parts.debin_table is None or not parts.legacy
    # Cells cut to max_length are counted once: before training, during the de-binning pass over the registered
    # data, when that is all the training data; otherwise by the dataset at the end of each pass (shards too).
    count_up_front = fit_debinning and not has_corpus
    train_ds = TrainingSentenceDataset(
        sources, spec, task_ids, indices=indices, block_size=block, warn_truncation=not count_up_front, **common
    )
    val_ds = None
    if len(val_idx):  # every labelled validation cell annotated, the other tasks scored alongside
        from scmulan.train import validation_dataset

        val_ds = validation_dataset(
            lambda s: TrainingSentenceDataset(
                [main], s, task_ids, indices=[val_idx], shuffle=False, warn_truncation=False, **common
            ),
            spec,
        )
    debin_table, gene_counts = parts.debin_table, parts.gene_counts
    if fit_debinning:
        chunk_size = data["chunk_size"]
        chunks = (main.read(train_idx[i : i + chunk_size])[0] for i in range(0, len(train_idx), chunk_size))
        if count_up_front:
            chunks = _counting_long_cells(chunks, main.col_token, parts.layout.training_gene_budget(len(spec.fields)))
        counts: list[np.ndarray] = []
        debin_table = debinning_table(
            recording_gene_counts(chunks, main.col_token, counts), main.col_token, len(parts.vocab)
        )
        gene_counts = gene_count_table(np.concatenate(counts), main.metadata[train_idx], len(parts.vocab))
    plan = CSentenceTrainingPlan(parts.network, **_plan_arguments(parts, plan_options, lr, sources, indices))
    if (
        data["num_workers"]
        and not all(s.fork_safe for s in sources)
        and mp.get_start_method(allow_none=True) != "spawn"
    ):
        # TileDB (SOMA sources) hangs in forked workers: start them with spawn, as tiledbsoma-ml does
        logger.warning("SOMA corpus: data-loading workers start with 'spawn' from now on (TileDB cannot fork).")
        mp.set_start_method("spawn", force=True)
    history = fit(
        plan,
        train_ds,
        val_ds,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        num_workers=data["num_workers"],
        seed=seed,
        **trainer_kwargs,
    )
    parts.network.requires_grad_(True)
    parts.network.eval()
    learnt = {t for t, w in zip(TASKS, spec.weights, strict=True) if w > 0}
    trained_fields = [f for f, m in zip(spec.fields, spec.metadata_columns, strict=True) if m]
    metadata_trained = spec.weights[TASKS.index("metadata")] > 0 and trained_fields
    return TrainingRun(
        history=history,
        train_indices=train_idx,
        validation_indices=val_idx,
        test_indices=test_idx,
        trained_tasks=[t for t in TASKS if t in learnt or t in parts.trained_tasks],
        metadata_fields=trained_fields if metadata_trained else list(parts.metadata_fields),
        debin_table=debin_table,
        gene_counts=gene_counts,
        annotation_trained=spec.weights[TASKS.index("annotation")] > 0,
    )


train.__doc__ = TRAIN_DOC  # the model class applies the returned TrainingRun


def _plan_arguments(parts: ModelParts, options: dict[str, Any], lr: float | None, sources, indices) -> dict[str, Any]:
    """Arguments of :class:`~scmulan.train.CSentenceTrainingPlan`: the objective's defaults, the user's options."""
    options = {**DEFAULT_PLAN, **options}
    label_loss = options.pop("label_loss")
    tau, smoothing = options.pop("logit_adjustment"), options.pop("label_smoothing")
    if label_loss not in ("softmax", "bce"):
        msg = f"plan_kwargs['label_loss'] must be 'softmax' or 'bce', got {label_loss!r}."
        raise ValueError(msg)
    labels = None
    if label_loss == "softmax":
        from scmulan.train import LabelTargets

        seen = [s.metadata[ix] if ix is not None else s.metadata for s, ix in zip(sources, indices, strict=True)]
        labels = LabelTargets.from_vocabulary(parts.vocab, np.concatenate(seen), tau=tau, label_smoothing=smoothing)
    width = parts.network.config.n_embd
    if isinstance(options["task_loss_weights"], str):
        if options["task_loss_weights"] != "auto":
            msg = f"plan_kwargs['task_loss_weights'] must be 'auto', None or one share per task, got {options['task_loss_weights']!r}."
            raise ValueError(msg)
        options["task_loss_weights"] = default_task_shares(width)
    if lr is None:
        lr = 3e-3 if width <= 256 else 1e-3 if width <= 768 else 3e-4
    return {"lr": lr, "labels": labels, **options}


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        msg = f"`{name}` must be a positive integer, got {value!r}."
        raise ValueError(msg)


def _counting_long_cells(chunks, col_token: np.ndarray, max_genes: int) -> Iterator:
    """Pass the chunks through, then warn with the number of cells whose sentences will be cut to ``max_length``."""
    n_long = n_cells = 0
    for X in chunks:
        n_long += int((_expressed_per_row(X, col_token) > max_genes).sum())
        n_cells += X.shape[0]
        yield X
    if n_long:
        warn(
            f"{n_long} of {n_cells} training cells express more than {max_genes} model genes; their sentences keep the "
            f"{max_genes} most highly expressed genes (raise `max_length` when building the model to keep them all).",
            UserWarning,
        )


def _expressed_per_row(X, col_token: np.ndarray) -> np.ndarray:
    """Number of expressed model genes in each row of a CSR matrix (rows without any, anywhere, count 0)."""
    expressed = (X.data > 0) & (col_token[X.indices] >= 0)
    running = np.concatenate([[0], np.cumsum(expressed, dtype=np.int64)])
    return running[X.indptr[1:]] - running[X.indptr[:-1]]
