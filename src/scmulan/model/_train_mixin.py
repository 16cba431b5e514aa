"""Training and fine-tuning of :class:`~scmulan.SCMULAN` (a mixin: the model class provides data and parts)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from scmulan._validation import check_log_normalized, needs_normalization
from scmulan.model._debin import debinning_table
from scmulan.model._fields import registry_key
from scmulan.model._resize import extend_network
from scmulan.sentence import ANNOTATION_FIELDS, TASKS, CellSource, TaskSpec, as_sources

if TYPE_CHECKING:
    from lightning.pytorch.strategies import Strategy

logger = logging.getLogger(__name__)

#: Objective defaults of :meth:`TrainingMixin.train` (``plan_kwargs``), chosen by the ablation in
#: ``benchmarks/annotation_ablation.py`` (see the objective page of the user guide).
DEFAULT_PLAN: dict[str, Any] = {
    "label_loss": "softmax",
    "logit_adjustment": 0.0,
    "label_smoothing": 0.0,
    "task_loss_weights": (1.0, 3.0, 1.0),
}


class TrainingMixin:
    """``train`` (pretraining with the three tasks) and ``finetune`` (new categories, then training)."""

    def train(
        self,
        max_epochs: int | None = 10,
        *,
        tasks: Sequence[str] | None = None,
        task_weights: Sequence[float] | None = None,
        metadata_fields: Sequence[str] | None = None,
        context_dropout: float = 0.5,
        gene_dropout: float = 0.0,
        batch_size: int = 32,
        lr: float | None = None,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        entity_weight: float = 1.0,
        value_weight: float = 1.0,
        positives: str = "mean",
        freeze_trunk: bool = False,
        train_size: float = 0.9,
        validation_size: float | None = None,
        corpus: Any = None,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str | Strategy = "auto",
        precision: str = "auto",
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = 1.0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every_n_steps: int | None = None,
        resume: bool = True,
        num_workers: int = 0,
        chunk_size: int = 2048,
        seed: int = 0,
        plan_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train on the registered AnnData (and an optional corpus streamed from disk) with the multitask objective.

        Parameters
        ----------
        max_epochs
            Passes over the training cells.
        tasks
            Any of ``"generation"``, ``"annotation"``, ``"metadata"``; for each sentence one requested task is
            sampled among those the cell has labels for (a cell without cell types still trains generation).
            Default: every task the registered fields support (generation always; annotation with a cell-type
            field; metadata with another field), or all three when ``task_weights`` is given.
        task_weights
            Relative weight of each requested task (default: equal).
        metadata_fields
            Fields the metadata task predicts, in decoding order (default: every registered field other than the
            cell types).
        context_dropout
            Probability of leaving out each known metadata token from a sentence's context.
        gene_dropout
            Probability of leaving out each gene of an annotation or metadata sentence (an augmentation against
            over-fitting small references; see :class:`~scmulan.sentence.TaskSpec`).
        batch_size
            Sentences per batch (per device).
        lr
            Peak learning rate; default by width: 3e-3 up to 256 (``tiny``, ``small``), 1e-3 up to 768 (``base``),
            3e-4 beyond (``scmulan-v1``).
        weight_decay, warmup_steps
            AdamW (decay on linear-layer matrices only) and the linear warm-up, capped at 10 % of the run's
            optimiser steps, before the cosine decay (see :class:`~scmulan.train.CSentenceTrainingPlan`).
        entity_weight, value_weight
            Weights of the entity (set likelihood, summed over the vocabulary) and value (level regression) losses.
            ``entity_weight=1`` equals the original's 2222 × mean BCE; the original's 200 × MSE made the value term
            dominate, hence ``value_weight=1`` (see the notes of :class:`~scmulan.train.CSentenceTrainingPlan`).
        positives
            ``"mean"``: each position's target entities share one unit of weight (default); ``"sum"``: the original's
            plain multi-hot BCE (see :func:`~scmulan.train.set_objective`).
        freeze_trunk
            Train only the embeddings and heads.
        train_size, validation_size
            Fractions of the registered cells for training and validation (the rest is held out).
        corpus
            Further cells streamed from disk, with the same ``obs`` columns as the registered AnnData: ``.h5ad``
            files (pretraining shards, read backed), a TileDB-SOMA ``ExperimentAxisQuery`` (e.g. of the CELLxGENE
            Census), ``Experiment`` or experiment URI (needs ``pip install 'scmulan[dataloaders]'``), an annbatch
            collection (its path, zarr group or ``DatasetCollection``), a :class:`~scmulan.sentence.SomaSource` or
            :class:`~scmulan.sentence.AnnbatchSource` built with other ``obs`` columns or gene names, or a list of
            these. Raw counts are normalised on the fly.
        accelerator, devices, strategy, precision
            Lightning settings: e.g. ``accelerator="gpu", devices=8, strategy="ddp"``; ``precision="auto"`` uses
            bf16 mixed precision on GPUs. ``strategy="fsdp"`` shards weights, gradients and optimiser state over
            the processes, one FSDP unit per transformer block; afterwards every process holds the full trained
            weights (see :func:`scmulan.train.fit`). ``"ddp"`` and ``"fsdp"`` run the calling script again in
            each process: save the model on rank 0 only.
        accumulate_grad_batches, gradient_clip_val
            Gradient accumulation and clipping of the gradient norm (``None``: off). A non-finite loss or
            gradient norm stops training before the update (:class:`~scmulan.train.NonFiniteLossError`, naming
            the step and the last checkpoint with finite weights).
        checkpoint_dir, checkpoint_every_n_steps, resume
            Checkpoints every N optimiser steps and at each epoch end; rerunning the same call resumes from the
            last one (weights, optimiser, schedule, data position and random states), ending with the weights of
            a run that never stopped.
        num_workers, chunk_size
            Data-loading workers, and cells read and bucketed by length together.
        seed
            Seed of the data split, the task sampling and the run.
        plan_kwargs
            Options of the objective (see :doc:`/user_guide/annotation`): ``label_loss`` (``"softmax"``, the
            default: a softmax over each label field's categories at label positions; ``"bce"``: the original's
            sigmoid over the whole vocabulary), ``logit_adjustment`` (τ of the training-label prior added to the label
            logits during training, default ``DEFAULT_PLAN["logit_adjustment"]``), ``label_smoothing``,
            ``task_loss_weights`` (each task's share of the loss in (generation, annotation, metadata) order,
            default ``DEFAULT_PLAN["task_loss_weights"]``; ``None``: the plain batch mean), and any other
            :class:`~scmulan.train.CSentenceTrainingPlan` argument.
        **trainer_kwargs
            Other :class:`lightning.pytorch.Trainer` arguments, e.g. ``callbacks``, ``max_steps`` or
            ``logger=lightning.pytorch.loggers.TensorBoardLogger("runs/")`` (added to the CSV log that
            ``history_`` is read from).
        """
        from scmulan.sentence import TrainingSentenceDataset
        from scmulan.train import CSentenceTrainingPlan, fit

        if self.adata is None:
            msg = "This model has no training data attached; use `model.finetune(adata)` to train it on your data."
            raise ValueError(msg)
        for name, value in (("batch_size", batch_size), ("accumulate_grad_batches", accumulate_grad_batches)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                msg = f"`{name}` must be a positive integer, got {value!r}."
                raise ValueError(msg)
        if max_epochs is not None and (
            isinstance(max_epochs, bool) or not isinstance(max_epochs, int | np.integer) or max_epochs < 1
        ):
            msg = f"`max_epochs` must be a positive integer or None (then `max_steps` decides), got {max_epochs!r}."
            raise ValueError(msg)
        spec = self._task_spec(tasks, task_weights, metadata_fields, context_dropout, gene_dropout)
        n = self.adata.n_obs
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        validation_size = (1.0 - train_size) if validation_size is None else validation_size
        if not 0 < train_size <= 1 or validation_size < 0 or train_size + validation_size > 1 + 1e-9:
            msg = f"`train_size` ({train_size}) and `validation_size` ({validation_size}) must fit in [0, 1]."
            raise ValueError(msg)
        n_train = max(1, int(round(train_size * n)))
        n_val = min(n - n_train, int(round(validation_size * n)))
        train_idx, val_idx = np.sort(perm[:n_train]), np.sort(perm[n_train : n_train + n_val])
        main = CellSource(
            self.adata, self.vocab, obs_keys=self.obs_keys_, layer=self.layer_, gene_symbols=self.gene_symbols_key_
        )
        sources, indices = [main], [train_idx]
        has_corpus = corpus is not None and not (isinstance(corpus, list | tuple) and not corpus)
        keys = {"obs_keys": self.obs_keys_, "gene_symbols": self.gene_symbols_key_}
        for shard in as_sources(corpus, self.vocab, **keys) if has_corpus else []:
            if list(shard.obs_keys) != list(self.obs_keys_):
                msg = f"A corpus source reads the fields {list(shard.obs_keys)}; build it with `obs_keys` for the "
                msg += f"registered fields, in this order: {list(self.obs_keys_)}."
                raise ValueError(msg)
            first = shard.read(np.arange(min(256, shard.n_obs)))[0]
            shard.normalize = needs_normalization(first, name="the first cells of a corpus source")
            sources.append(shard)
            indices.append(None)
        self._check_labels(spec, sources, indices)
        common = {
            "end_id": self.vocab.end_id,
            "pad_id": self.vocab.pad_id,
            "batch_size": batch_size,
            "chunk_size": chunk_size,
            "max_length": self.max_length_,
            "seed": seed,
        }
        task_ids = {self._task_token(t): self.vocab.task_id(self._task_token(t)) for t in TASKS}
        block = 1 if len(sources) == 1 else 256
        fit_debinning = self.debin_table_ is None or not self.legacy_
        # Cells cut to max_length are counted once: before training, during the de-binning pass over the registered
        # data, when that is all the training data; otherwise by the dataset at the end of each pass (shards too).
        count_up_front = fit_debinning and not has_corpus
        train_ds = TrainingSentenceDataset(
            sources, spec, task_ids, indices=indices, block_size=block, warn_truncation=not count_up_front, **common
        )
        val_ds = None
        if n_val:
            val_ds = TrainingSentenceDataset(
                [main], spec, task_ids, indices=[val_idx], shuffle=False, warn_truncation=False, **common
            )
        if fit_debinning:
            chunks = (main.read(train_idx[i : i + chunk_size])[0] for i in range(0, len(train_idx), chunk_size))
            if count_up_front:
                chunks = _counting_long_cells(chunks, main.col_token, spec, self)
            self.debin_table_ = debinning_table(chunks, main.col_token, len(self.vocab))
        if lr is None:
            width = self.module.config.n_embd
            lr = 3e-3 if width <= 256 else 1e-3 if width <= 768 else 3e-4
        options = {**DEFAULT_PLAN, **(plan_kwargs or {})}
        label_loss = options.pop("label_loss")
        tau, smoothing = options.pop("logit_adjustment"), options.pop("label_smoothing")
        if label_loss not in ("softmax", "bce"):
            msg = f"plan_kwargs['label_loss'] must be 'softmax' or 'bce', got {label_loss!r}."
            raise ValueError(msg)
        labels = None
        if label_loss == "softmax":
            from scmulan.train import LabelTargets

            seen = [s.metadata[ix] if ix is not None else s.metadata for s, ix in zip(sources, indices, strict=True)]
            labels = LabelTargets.from_vocabulary(self.vocab, np.concatenate(seen), tau=tau, label_smoothing=smoothing)
        explicit = {
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup_steps": warmup_steps,
            "entity_weight": entity_weight,
            "value_weight": value_weight,
            "positives": positives,
            "freeze_trunk": freeze_trunk,
        }
        plan = CSentenceTrainingPlan(self.module, labels=labels, **{**explicit, **options})
        if num_workers and not all(s.fork_safe for s in sources) and mp.get_start_method(allow_none=True) != "spawn":
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
            strategy=strategy,
            precision=precision,
            accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every_n_steps=checkpoint_every_n_steps,
            resume=resume,
            num_workers=num_workers,
            seed=seed,
            **trainer_kwargs,
        )
        self.module.requires_grad_(True)
        self.module.eval()
        self.history_ = history
        self.is_trained_ = True
        learnt = {t for t, w in zip(TASKS, spec.weights, strict=True) if w > 0}
        self.trained_tasks_ = [t for t in TASKS if t in learnt or t in self.trained_tasks_]
        self.train_indices_, self.validation_indices_ = train_idx, val_idx
        self.test_indices_ = np.sort(perm[n_train + n_val :])
        self._calibrate_after_training(spec, val_idx, accelerator)
        trained_fields = [f for f, m in zip(spec.fields, spec.metadata_columns, strict=True) if m]
        if spec.weights[TASKS.index("metadata")] > 0 and trained_fields:
            self.metadata_fields_ = trained_fields

    def _calibrate_after_training(self, spec: TaskSpec, val_idx: np.ndarray, accelerator: str) -> None:
        """Calibrate on the validation cells when annotation was trained and at least 10 of them are labelled."""
        self.calibration_ = None  # a calibration of earlier weights no longer holds
        if spec.weights[TASKS.index("annotation")] <= 0 or len(val_idx) < 10:
            return
        columns = [self.obs_keys_[f] for f in self.annotation_fields if f in self.obs_keys_]
        labelled = self.adata.obs.iloc[val_idx][columns].notna().all(1).to_numpy() if columns else np.zeros(0, bool)
        if labelled.sum() < 10:
            return
        device = "cpu" if accelerator == "cpu" else "auto"
        try:
            cal = self.calibrate(self.adata[val_idx[labelled]], device=device)
        except ValueError as e:  # e.g. too few validation cells express a model gene
            logger.info("not calibrated: %s", e)
            return
        logger.info(
            "calibrated on %d validation cells: ECE %.3f -> %.3f, open-set threshold %.2f",
            cal.n_heldout,
            cal.ece_before,
            cal.ece_after,
            cal.threshold,
        )

    @staticmethod
    def _task_token(task: str) -> str:
        return {"generation": "<generate>", "annotation": "<annotate>", "metadata": "<metadata>"}[task]

    def _task_spec(self, tasks, task_weights, metadata_fields, context_dropout, gene_dropout=0.0) -> TaskSpec:
        fields = tuple(self.obs_keys_)
        if tasks is None and task_weights is not None:
            tasks = TASKS
        elif tasks is None:
            has_metadata = any(f not in ANNOTATION_FIELDS for f in (metadata_fields or fields))
            supported = {
                "generation": True,
                "annotation": any(f in fields for f in ANNOTATION_FIELDS),
                "metadata": has_metadata,
            }
            tasks = [t for t in TASKS if supported[t]]
            logger.info("training tasks: %s", ", ".join(tasks))
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = set(tasks) - set(TASKS)
        if unknown or not tasks:
            msg = f"`tasks` must be a non-empty subset of {TASKS}, got {tasks}."
            raise ValueError(msg)
        if task_weights is not None and len(task_weights) != len(tasks):
            msg = f"`task_weights` needs one weight per task in `tasks` ({len(tasks)}), got {len(task_weights)}."
            raise ValueError(msg)
        weights = dict(zip(tasks, task_weights or [1.0] * len(tasks), strict=True))
        if metadata_fields is not None:
            unknown = set(metadata_fields) - set(fields)
            if unknown:
                msg = f"`metadata_fields` {sorted(unknown)} are not registered (registered: {list(fields)})."
                raise ValueError(msg)
        if "annotation" in tasks and not any(f in fields for f in ANNOTATION_FIELDS):
            msg = "The annotation task needs `cell_type_key` and/or `coarse_cell_type_key` in `setup_anndata`."
            raise ValueError(msg)
        if "metadata" in tasks and not [f for f in (metadata_fields or fields) if f not in ANNOTATION_FIELDS]:
            msg = "The metadata task needs a registered metadata field other than the cell types (e.g. `organ_key`)."
            raise ValueError(msg)
        return TaskSpec(
            fields=fields,
            weights=tuple(weights.get(t, 0.0) for t in TASKS),
            metadata_fields=tuple(metadata_fields) if metadata_fields is not None else None,
            context_dropout=context_dropout,
            gene_dropout=gene_dropout,
            # the next-entity objective reads generation sentences from the most to the least expressed gene
            generation_order="descending" if self.module.config.generation_objective == "next" else "shuffle",
        )

    @staticmethod
    def _check_labels(spec: TaskSpec, sources: list[CellSource], indices: list) -> None:
        """Fail early when a requested task has no cell with the labels it needs."""
        known = np.concatenate(
            [s.metadata[ix] if ix is not None else s.metadata for s, ix in zip(sources, indices, strict=True)]
        )
        known = known >= 0
        names = dict(zip(TASKS, spec.weights, strict=True))
        if (
            names["annotation"] > 0
            and spec.annotation_columns.any()
            and not known[:, spec.annotation_columns].all(1).any()
        ):
            msg = (
                "No training cell has all the cell-type labels the annotation task needs; check the registered columns."
            )
            raise ValueError(msg)
        if names["metadata"] > 0 and spec.metadata_columns.any() and not known[:, spec.metadata_columns].any():
            msg = "No training cell has any of the metadata fields the metadata task predicts."
            raise ValueError(msg)

    def finetune(
        self,
        adata: AnnData,
        max_epochs: int | None = 10,
        *,
        tasks: Sequence[str] = ("annotation",),
        freeze_trunk: bool = False,
        **train_kwargs: Any,
    ) -> None:
        """Fine-tune on labelled data: new categories join the vocabulary, then the model trains on ``adata``.

        ``adata`` must be registered with :meth:`setup_anndata` (its own column names). Categories the model does
        not know (new cell types, organs…) get new entities whose rows start at the mean of their field's
        existing rows; existing ids are unchanged. The model keeps its gene set: genes of ``adata`` outside it are
        ignored, and model genes missing from ``adata`` are simply never expressed.

        Parameters
        ----------
        adata
            Registered, log-normalised AnnData.
        max_epochs
            Passes over ``adata``.
        tasks
            Tasks to train (typically annotation only).
        freeze_trunk
            Keep the transformer blocks fixed; train embeddings and heads only.
        **train_kwargs
            Other :meth:`train` arguments (``lr``, ``batch_size``, ``train_size``…).
        """
        from scmulan._anndata import get_modality

        adata = get_modality(adata)
        manager = self._get_most_recent_anndata_manager(adata, required=False)
        if manager is None:
            msg = "Register the fine-tuning data first: `scmulan.SCMULAN.setup_anndata(adata, cell_type_key=..., ...)`."
            raise ValueError(msg)
        registry = manager.registry
        # refused before anything changes: the vocabulary, network and attached data stay as they were
        check_log_normalized(self._matrix(adata, registry["setup_args"].get("layer")), where="SCMULAN.finetune")
        obs_keys = self._registered_obs_keys(registry)
        vocab = self.vocab
        for field in obs_keys:
            categories = [str(c) for c in manager.get_state_registry(registry_key(field))["categorical_mapping"]]
            vocab = vocab.extend(field, categories)
        if len(vocab) > len(self.vocab):
            logger.info("vocabulary extended by %d entities", len(vocab) - len(self.vocab))
            self.module = extend_network(self.module, self.vocab, vocab)
            if self.debin_table_ is not None:
                pad = np.zeros((len(vocab) - len(self.vocab), self.debin_table_.shape[1]), dtype=np.float32)
                self.debin_table_ = np.concatenate([self.debin_table_, pad])
            self.vocab = vocab
        source = CellSource(adata, self.vocab, gene_symbols=registry["setup_args"].get("gene_symbols_key"))
        logger.info("fine-tuning data share %d of the model's %d genes", source.n_model_genes, len(self.vocab.genes))
        self._adata, self._adata_manager = adata, manager
        self._register_manager_for_instance(manager)
        self.registry_ = registry
        self.summary_stats = manager.summary_stats
        self.obs_keys_ = obs_keys
        self.layer_ = registry["setup_args"].get("layer")
        self.gene_symbols_key_ = registry["setup_args"].get("gene_symbols_key")
        self._set_parts(
            self.vocab,
            self.module,
            obs_keys=obs_keys,
            layer=self.layer_,
            gene_symbols=self.gene_symbols_key_,
            max_length=self.max_length_,
            legacy=False,  # fine-tuned: no longer the original model (metadata context is used from now on)
            metadata_fields=self.metadata_fields_,
            debin_table=self.debin_table_,
            trained_tasks=self.trained_tasks_,
        )
        self.train(max_epochs, tasks=tasks, freeze_trunk=freeze_trunk, **train_kwargs)


def _counting_long_cells(chunks, col_token: np.ndarray, spec: TaskSpec, model) -> object:
    """Pass the chunks through, then warn with the number of cells whose sentences will be cut to ``max_length``."""
    from scmulan._warnings import warn

    max_genes = max(1, model.max_length_ - len(spec.fields) - 3)
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
