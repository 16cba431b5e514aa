"""``SCMULAN``: the scvi-tools face of the model (registration, training, inference, files), delegating to recipes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from anndata import AnnData
from scvi.model.base import BaseModelClass

from scmulan._validation import check_log_normalized
from scmulan.model import _annotation, _calibration, _finetune, _generation, _persist, _registration, _training
from scmulan.model._fields import registry_key
from scmulan.model._parts import ModelParts, documented_by, new_parts
from scmulan.model._query import expression
from scmulan.model._registration import gene_names, registered_obs_keys
from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.sentence import SentenceLayout
from scmulan.vocab import Vocabulary

DEFAULT_MAX_LENGTH = _persist.DEFAULT_MAX_LENGTH


class SCMULAN(BaseModelClass):
    """Multitask generative pre-trained transformer over cell sentences (scMulan).

    Every cell is written as a c-sentence of (entity, value) pairs: its expressed genes with per-cell expression
    levels 1..10, its metadata (organ, region, coarse and fine cell type, sex, age, technology, disease, extra
    fields) and a task prompt. One decoder-only transformer is trained on three tasks at once — conditional
    generation of cells, dual hierarchical (coarse then fine) cell-type annotation and metadata prediction.

    Each method delegates to a recipe module that receives the model's :meth:`parts` (training:
    ``model/_training.py``; annotation, metadata and embeddings: ``_annotation.py``; generation: ``_generation.py``;
    calibration: ``_calibration.py``; files: ``_persist.py``), see :doc:`/architecture`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`; its expression must be log-normalised
        (:func:`scmulan.pp.prepare`). The vocabulary is built from its genes and registered categories.
    config
        Size: ``"tiny"``, ``"small"``, ``"base"``, ``"scmulan-v1"`` (see :data:`scmulan.nn.PRESETS`).
    genes
        Restrict the model's gene set to these genes (e.g. highly variable genes); default: every gene of ``adata``.
    max_length
        Longest sentence; cells expressing more model genes keep their most highly expressed ones.
    seed
        Seed of the network's initial weights, so that the same call builds the same model whatever ran before it
        in the process (torch's global random state is left untouched). ``None`` draws them from torch's global
        random state instead (e.g. as set by ``scvi.settings.seed``).
    **overrides
        Fields of :class:`~scmulan.nn.TransformerConfig` to change (``n_layer``, ``n_embd``, ``dropout``…).

    Attributes
    ----------
    vocab
        The :class:`~scmulan.Vocabulary` (genes, metadata categories, task prompts).
    module
        The :class:`~scmulan.nn.CSentenceTransformer`.
    obs_keys_
        Metadata field -> ``obs`` column of the registered data (used as prompt context for queries that have it).
    metadata_fields_
        Fields the metadata task decodes, in order (``predict_metadata`` can predict these).
    trained_tasks_
        Tasks the network has been trained on (``"generation"``, ``"annotation"``, ``"metadata"``); a trained model
        refuses to decode the prompt of a task it never learnt.
    max_length_
        Longest sentence.
    debin_table_
        Mean log-normalised value of every gene at every level in the training data (``generate`` output scale).
    gene_counts_
        Quantiles of the training cells' gene counts per metadata category (``generate`` draws each cell's length
        from those of its condition); ``None`` for the original checkpoint.
    legacy_
        Whether the model was imported from the original scMulan checkpoint.
    history_
        Logged training metrics, ``{name: DataFrame}``.

    Examples
    --------
    >>> import scmulan
    >>> ref = scmulan.datasets.synthetic_atlas(n_cells=500)
    >>> scmulan.pp.prepare(ref)
    >>> scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    >>> model = scmulan.SCMULAN(ref, config="tiny")
    >>> model.train(max_epochs=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: AnnData | None = None,
        config: str = "small",
        *,
        genes: Sequence[str] | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        seed: int | None = 0,
        **overrides: Any,
    ) -> None:
        if adata is None:
            msg = (
                "`SCMULAN(adata)` needs an AnnData registered with `SCMULAN.setup_anndata`. To use a trained model, "
                "call `SCMULAN.load(dir)`, `SCMULAN.from_legacy_checkpoint(...)` or `scmulan.load_pretrained()`."
            )
            raise ValueError(msg)
        if not any(m.adata_uuid == adata.uns.get("_scvi_uuid") for m in self._setup_adata_manager_store.values()):
            msg = "The AnnData is not registered: call `scmulan.SCMULAN.setup_anndata(adata, ...)` first."
            raise ValueError(msg)
        super().__init__(adata)
        setup = self.adata_manager.registry["setup_args"]
        obs_keys = registered_obs_keys(self.adata_manager.registry)
        check_log_normalized(expression(adata, setup.get("layer")), where="SCMULAN(adata)")
        names = gene_names(adata, setup.get("gene_symbols_key"))
        if genes is not None:
            absent = sorted(set(genes) - set(names))
            if absent:
                msg = f"{len(absent)} of the requested `genes` are not in the data, e.g. {absent[:5]}."
                raise ValueError(msg)
            names = list(dict.fromkeys(genes))
        metadata = {
            field: [str(c) for c in self.adata_manager.get_state_registry(registry_key(field))["categorical_mapping"]]
            for field in obs_keys
        }
        vocab = Vocabulary.build(names, metadata)
        net_config = TransformerConfig.from_preset(config, vocab_size=len(vocab), **overrides)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            network = CSentenceTransformer(net_config)
        self._adopt(
            new_parts(
                vocab,
                network,
                obs_keys=obs_keys,
                max_length=max_length,
                layer=setup.get("layer"),
                gene_symbols_key=setup.get("gene_symbols_key"),
            )
        )
        self.init_params_ = self._get_init_params(locals())

    # ---------------------------------------------------------------------------------------------- registration

    @classmethod
    @documented_by(_registration.setup_anndata)
    def setup_anndata(cls, adata: AnnData, *args: Any, **kwargs: Any) -> None:
        _registration.setup_anndata(cls, adata, *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- parts
    def parts(self) -> ModelParts:
        """The model's parts, as the recipes receive them (a snapshot: the attributes stay the model's state)."""
        return ModelParts(
            vocab=self.vocab,
            network=self.module,
            layout=self.layout,
            obs_keys=dict(self.obs_keys_),
            layer=self.layer_,
            gene_symbols_key=self.gene_symbols_key_,
            legacy=self.legacy_,
            metadata_fields=tuple(self.metadata_fields_),
            trained_tasks=tuple(self.trained_tasks_),
            is_trained=bool(self.is_trained_),
            debin_table=self.debin_table_,
            gene_counts=self.gene_counts_,
            calibration=self.calibration_,
        )

    def _adopt(self, parts: ModelParts) -> None:
        """Take the attributes of ``parts`` (the model's state is its attributes, as in scvi-tools)."""
        net, vocab = parts.network, parts.vocab
        self.vocab, self.module = vocab, net
        self.obs_keys_, self.layer_, self.gene_symbols_key_ = dict(parts.obs_keys), parts.layer, parts.gene_symbols_key
        self.max_length_, self.legacy_ = parts.layout.max_length, parts.legacy
        self.metadata_fields_, self.trained_tasks_ = list(parts.metadata_fields), list(parts.trained_tasks)
        self.is_trained_, self.debin_table_, self.calibration_ = parts.is_trained, parts.debin_table, parts.calibration
        self.gene_counts_ = parts.gene_counts
        self._model_summary_string = (
            f"SCMULAN{' (original scMulan checkpoint)' if parts.legacy else ''}: {net.config.n_layer} layers, "
            f"{net.config.n_head} heads, width {net.config.n_embd}, {net.num_parameters():,} parameters; "
            f"vocabulary of {len(vocab)} entities ({len(vocab.genes)} genes; metadata: "
            f"{', '.join(f'{f} ({len(vocab.field_ids(f))})' for f in vocab.metadata_fields) or 'none'})."
        )

    @classmethod
    def _from_parts(cls, parts: ModelParts, registry: dict | None = None) -> SCMULAN:
        model = cls.__new__(cls)
        BaseModelClass.__init__(model, registry=registry or _registration.empty_registry())
        model._adopt(parts)
        model.init_params_ = {"kwargs": {}, "non_kwargs": {"config": parts.network.config.to_dict()}}
        return model

    @property
    def config(self) -> TransformerConfig:
        """The network's configuration."""
        return self.module.config

    @property
    def layout(self) -> SentenceLayout:
        """How the model's c-sentences are laid out: prompts, gene budgets, gene order."""
        return SentenceLayout.for_objective(self.max_length_, self.module.config.generation_objective)

    @property
    def annotation_fields(self) -> list[str]:
        """Fields the annotation task decodes, in order (coarse, then fine)."""
        return self.parts().annotation_fields

    # ---------------------------------------------------------------------------------------------- training
    @documented_by(_training.train, bound=2)
    def train(self, *args: Any, **kwargs: Any) -> None:
        run = _training.train(self.parts(), self.adata, *args, **kwargs)
        self.history_, self.is_trained_ = run.history, True
        self.train_indices_, self.validation_indices_, self.test_indices_ = (
            run.train_indices,
            run.validation_indices,
            run.test_indices,
        )
        self.trained_tasks_, self.metadata_fields_, self.debin_table_ = (
            run.trained_tasks,
            run.metadata_fields,
            run.debin_table,
        )
        self.gene_counts_ = run.gene_counts
        self.calibration_ = None  # a calibration of earlier weights no longer holds
        if run.annotation_trained:
            _calibration.calibrate_after_training(self, run.validation_indices, kwargs.get("accelerator", "auto"))

    def finetune(
        self,
        adata: AnnData,
        max_epochs: int | str | None = "auto",
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
            Passes over ``adata``; ``"auto"``: as in :meth:`train` (enough for 750 optimiser steps, at least 10).
        tasks
            Tasks to train (typically annotation only).
        freeze_trunk
            Keep the transformer blocks fixed; train embeddings and heads only.
        **train_kwargs
            Other :meth:`train` arguments (``lr``, ``batch_size``, ``train_size``, ``plan_kwargs``…).
        """
        adata, manager, parts = _finetune.finetuning_parts(self.parts(), adata, self._get_most_recent_anndata_manager)
        self._adata, self._adata_manager = adata, manager
        self._register_manager_for_instance(manager)
        self.registry_, self.summary_stats = manager.registry, manager.summary_stats
        self._adopt(parts)
        plan_kwargs = {**(train_kwargs.pop("plan_kwargs", None) or {}), "freeze_trunk": freeze_trunk}
        self.train(max_epochs, tasks=tasks, plan_kwargs=plan_kwargs, **train_kwargs)

    # ---------------------------------------------------------------------------------------------- inference
    @documented_by(_annotation.annotate)
    def annotate(self, adata: AnnData, *args: Any, **kwargs: Any) -> Any:
        return _annotation.annotate(self.parts(), adata, *args, **kwargs)

    @documented_by(_annotation.predict_metadata)
    def predict_metadata(self, adata: AnnData, *args: Any, **kwargs: Any) -> Any:
        return _annotation.predict_metadata(self.parts(), adata, *args, **kwargs)

    @documented_by(_annotation.latent_representation)
    def get_latent_representation(self, adata: AnnData | None = None, *args: Any, **kwargs: Any) -> np.ndarray:
        adata = self.adata if adata is None else adata
        if adata is None:
            msg = "Pass `adata`: this model has no data attached."
            raise ValueError(msg)
        return _annotation.latent_representation(self.parts(), adata, *args, **kwargs)

    @documented_by(_calibration.calibrate)
    def calibrate(self, *args: Any, **kwargs: Any) -> Any:
        return _calibration.calibrate(self, *args, **kwargs)

    @documented_by(_generation.generate)
    def generate(self, *args: Any, **kwargs: Any) -> AnnData:
        return _generation.generate(self.parts(), *args, **kwargs)

    @documented_by(_generation.fit_debinning)
    def fit_debinning(self, *args: Any, **kwargs: Any) -> None:
        self.debin_table_ = _generation.fit_debinning(self.parts(), *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- files
    @documented_by(_persist.save)
    def save(self, *args: Any, **kwargs: Any) -> None:
        _persist.save(self, *args, **kwargs)

    @classmethod
    @documented_by(_persist.load)
    def load(cls, *args: Any, **kwargs: Any) -> SCMULAN:
        return _persist.load(cls, *args, **kwargs)

    @classmethod
    @documented_by(_persist.from_legacy_checkpoint)
    def from_legacy_checkpoint(cls, *args: Any, **kwargs: Any) -> SCMULAN:
        return _persist.from_legacy_checkpoint(cls, *args, **kwargs)

    @classmethod
    @documented_by(_persist.from_pretrained)
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> SCMULAN:
        return _persist.from_pretrained(cls, *args, **kwargs)

    @classmethod
    @documented_by(_persist.from_hub)
    def from_hub(cls, *args: Any, **kwargs: Any) -> SCMULAN:
        return _persist.from_hub(cls, *args, **kwargs)

    @documented_by(_persist.push_to_hub)
    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        return _persist.push_to_hub(self, *args, **kwargs)
