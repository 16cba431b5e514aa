"""``SCMULAN``: the scvi-tools model class that registers AnnData, trains, fine-tunes, infers, saves and loads."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass

from scmulan._device import resolve_device
from scmulan._validation import check_log_normalized
from scmulan._warnings import warn
from scmulan.model import _io
from scmulan.model._fields import METADATA_KEYS, MetadataObsField, registry_key
from scmulan.model._generate_mixin import GenerationMixin
from scmulan.model._infer_mixin import InferenceMixin
from scmulan.model._train_mixin import TrainingMixin
from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.sentence import ANNOTATION_FIELDS, TASKS, CellSource
from scmulan.vocab import Vocabulary

logger = logging.getLogger(__name__)

X_KEY = "X"
DEFAULT_MAX_LENGTH = 1550  # the original's training block size
# Inference warns when the query has fewer than this fraction of the model's genes (the threshold below which
# `scmulan.pp.prepare` warns too): the missing genes count as not expressed.
MIN_GENE_OVERLAP = 0.5


def _empty_registry() -> dict[str, Any]:
    import scvi

    return {
        "scvi_version": scvi.__version__,
        "model_name": "SCMULAN",
        "setup_method_name": "setup_anndata",
        "setup_args": {},
        "field_registries": {},
    }


class SCMULAN(TrainingMixin, InferenceMixin, GenerationMixin, BaseModelClass):
    """Multitask generative pre-trained transformer over cell sentences (scMulan).

    Every cell is written as a c-sentence of (entity, value) pairs: its expressed genes with per-cell expression
    levels 1..10, its metadata (organ, region, coarse and fine cell type, sex, age, technology, disease, extra
    fields) and a task prompt. One decoder-only transformer is trained on three tasks at once — conditional
    generation of cells, dual hierarchical (coarse then fine) cell-type annotation and metadata prediction.

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
        if not any(m.adata_uuid == adata.uns.get("_scvi_uuid") for m in self._setup_managers()):
            msg = "The AnnData is not registered: call `scmulan.SCMULAN.setup_anndata(adata, ...)` first."
            raise ValueError(msg)
        super().__init__(adata)
        setup = self.adata_manager.registry["setup_args"]
        obs_keys = self._registered_obs_keys(self.adata_manager.registry)
        check_log_normalized(self._matrix(adata, setup.get("layer")), where="SCMULAN(adata)")
        names = _gene_names(adata, setup.get("gene_symbols_key"))
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
        self._set_parts(
            vocab,
            network,
            obs_keys=obs_keys,
            layer=setup.get("layer"),
            gene_symbols=setup.get("gene_symbols_key"),
            max_length=max_length,
            legacy=False,
        )
        self.init_params_ = self._get_init_params(locals())

    # ---------------------------------------------------------------------------------------------- registration
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        gene_symbols_key: str | None = None,
        organ_key: str | None = None,
        region_key: str | None = None,
        coarse_cell_type_key: str | None = None,
        cell_type_key: str | None = None,
        sex_key: str | None = None,
        age_key: str | None = None,
        technology_key: str | None = None,
        disease_key: str | None = None,
        extra_metadata_keys: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Register an AnnData: its log-normalised expression and the ``obs`` columns of each metadata field.

        Missing values (NaN) in a metadata column are allowed: those cells simply do not train the tasks that need
        the value. Registration adds ``obs["_scvi_<key>"]`` code columns and ``uns["_scvi_*"]`` ids, as scvi-tools
        does; nothing else is changed.

        Parameters
        ----------
        adata
            Cells × genes, log-normalised (:func:`scmulan.pp.prepare`).
        layer
            Layer with the expression (``None``: ``X``).
        gene_symbols_key
            ``var`` column with gene symbols when they are not the ``var_names``
            (``var["scmulan_gene"]`` written by :func:`scmulan.pp.prepare` takes precedence).
        organ_key, region_key, coarse_cell_type_key, cell_type_key, sex_key, age_key, technology_key, disease_key
            ``obs`` column of each metadata field (``None``: the field is not used).
        extra_metadata_keys
            Further categorical ``obs`` columns, each its own metadata field (named after the column).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if adata.n_obs == 0:
            msg = "The AnnData has no cells: there is nothing to register."
            raise ValueError(msg)
        fields: list = [LayerField(X_KEY, layer, is_count_data=False)]
        keys = {
            "organ": organ_key,
            "region": region_key,
            "coarse_cell_type": coarse_cell_type_key,
            "cell_type": cell_type_key,
            "sex": sex_key,
            "age": age_key,
            "technology": technology_key,
            "disease": disease_key,
        }
        for key in list(extra_metadata_keys or []):
            if key in keys:
                msg = f"`extra_metadata_keys` entry {key!r} clashes with a built-in metadata field."
                raise ValueError(msg)
            keys[key] = key
        for field, key in keys.items():
            if key is None:
                continue
            if key not in adata.obs:
                param = METADATA_KEYS.get(field, "extra_metadata_keys")
                msg = f"`{param}={key!r}` is not a column of `adata.obs` (columns: {list(adata.obs.columns)[:20]})."
                raise ValueError(msg)
            fields.append(MetadataObsField(registry_key(field), key))
        if gene_symbols_key is not None and gene_symbols_key not in adata.var:
            msg = f"`gene_symbols_key={gene_symbols_key!r}` is not a column of `adata.var`."
            raise ValueError(msg)
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @classmethod
    def _setup_managers(cls) -> list:
        return list(cls._setup_adata_manager_store.values())

    @staticmethod
    def _registered_obs_keys(registry: dict) -> dict[str, str]:
        """Metadata field -> obs column, canonical fields first (in canonical order), then extras."""
        fields = {}
        for key, value in registry["field_registries"].items():
            if key.startswith("scmulan_"):
                fields[key.removeprefix("scmulan_")] = value["state_registry"]["original_key"]
        canonical = [f for f in Vocabulary.METADATA_FIELDS if f in fields]
        extras = [f for f in fields if f not in Vocabulary.METADATA_FIELDS]
        return {f: fields[f] for f in canonical + extras}

    @staticmethod
    def _matrix(adata: AnnData, layer: str | None):
        if layer is None:
            return adata.X
        if layer not in adata.layers:
            msg = f"`layer={layer!r}` is not in `adata.layers` ({list(adata.layers)})."
            raise ValueError(msg)
        return adata.layers[layer]

    # ---------------------------------------------------------------------------------------------- parts
    def _set_parts(
        self,
        vocab: Vocabulary,
        net: CSentenceTransformer,
        *,
        obs_keys: dict[str, str],
        layer: str | None,
        gene_symbols: str | None,
        max_length: int,
        legacy: bool,
        metadata_fields: Sequence[str] | None = None,
        debin_table: np.ndarray | None = None,
        trained_tasks: Sequence[str] | None = None,
    ) -> None:
        if len(vocab) != net.config.vocab_size:
            msg = f"Vocabulary ({len(vocab)} entities) and network ({net.config.vocab_size}) do not match."
            raise ValueError(msg)
        self.vocab = vocab
        self.module = net
        self.obs_keys_ = dict(obs_keys)
        self.layer_ = layer
        self.gene_symbols_key_ = gene_symbols
        self.max_length_ = int(max_length)
        self.legacy_ = bool(legacy)
        if metadata_fields is None:
            metadata_fields = [f for f in vocab.metadata_fields if f not in ANNOTATION_FIELDS]
        self.metadata_fields_ = list(metadata_fields)
        if trained_tasks is None:  # the original checkpoint was pre-trained on all three tasks, a new network on none
            trained_tasks = TASKS if legacy else ()
        self.trained_tasks_ = list(trained_tasks)
        self.debin_table_ = debin_table
        self.calibration_ = None  # set by `calibrate` (see scmulan.model._calibration)
        self._model_summary_string = (
            f"SCMULAN{' (original scMulan checkpoint)' if legacy else ''}: {net.config.n_layer} layers, "
            f"{net.config.n_head} heads, width {net.config.n_embd}, {net.num_parameters():,} parameters; "
            f"vocabulary of {len(vocab)} entities ({len(vocab.genes)} genes; metadata: "
            f"{', '.join(f'{f} ({len(vocab.field_ids(f))})' for f in vocab.metadata_fields) or 'none'})."
        )

    @classmethod
    def _from_parts(cls, vocab: Vocabulary, net: CSentenceTransformer, registry: dict | None = None, **kwargs):
        model = cls.__new__(cls)
        BaseModelClass.__init__(model, registry=registry or _empty_registry())
        model._set_parts(vocab, net, **kwargs)
        model.init_params_ = {"kwargs": {}, "non_kwargs": {"config": net.config.to_dict()}}
        return model

    @property
    def config(self) -> TransformerConfig:
        """The network's configuration."""
        return self.module.config

    @property
    def annotation_fields(self) -> list[str]:
        """Fields the annotation task decodes, in order (coarse, then fine)."""
        return [f for f in ANNOTATION_FIELDS if f in self.vocab.fields]

    def _source(
        self, adata: AnnData, *, context: bool, exclude: Sequence[str] = (), layer: str | None = None, where: str = ""
    ):
        """The query cells as a :class:`~scmulan.sentence.CellSource` (context: the metadata columns it has)."""
        from scmulan._anndata import get_modality

        adata = get_modality(adata)
        if adata.n_obs == 0:
            msg = "The AnnData has no cells."
            raise ValueError(msg)
        check_log_normalized(self._matrix(adata, layer), where=where or "scmulan inference")
        obs_keys = {}
        if context:
            obs_keys = {f: k for f, k in self.obs_keys_.items() if f not in exclude and k in adata.obs}
        source = CellSource(adata, self.vocab, obs_keys=obs_keys, layer=layer, gene_symbols=self.gene_symbols_key_)
        n_model, n_shared = len(self.vocab.genes), source.n_model_genes
        logger.debug("query shares %d of the model's %d genes", n_shared, n_model)
        if n_shared < MIN_GENE_OVERLAP * n_model:
            msg = (
                f"The data have only {n_shared} of the model's {n_model} genes "
                f"({n_shared / n_model:.1%}, below {MIN_GENE_OVERLAP:.0%}); the missing ones count as not expressed, "
                "which may lower the quality of the results. "
            )
            if self._prepared_for_this_model(adata):
                msg += "The gene names were matched with `scmulan.pp.prepare(adata, model)` already: the data lack the rest."
            else:
                msg += (
                    "If gene names differ (case, Ensembl IDs, aliases), run `scmulan.pp.prepare(adata, model)` to "
                    "match them to the model's genes."
                )
            warn(msg, UserWarning)
        return source

    def _prepared_for_this_model(self, adata: AnnData) -> bool:
        """Whether :func:`scmulan.pp.prepare` matched ``adata``'s genes to this model's gene set."""
        report = adata.uns.get("scmulan_prepare", {})
        if "scmulan_gene" not in adata.var or report.get("n_model_genes") != len(self.vocab.genes):
            return False
        resolved = adata.var["scmulan_gene"].dropna().astype(str)
        return bool(resolved.isin(self.vocab.genes).all())

    # ---------------------------------------------------------------------------------------------- save / load
    def save(self, dir_path: str | os.PathLike, overwrite: bool = False, save_anndata: bool = False, **kwargs) -> None:
        """Save to a directory; a reloaded model gives identical outputs.

        Files: ``model.json`` (the settings scvi-tools keeps in ``model.pt``), ``model.safetensors``, ``vocab.json``
        and optionally ``adata.h5ad``: no pickle. They are written under temporary names and moved into place at the
        end, so a save that fails or is interrupted leaves the previous model in ``dir_path`` intact.

        Parameters
        ----------
        dir_path
            Directory to write.
        overwrite
            Replace an existing saved model.
        save_anndata
            Also write the registered AnnData.
        **kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.
        """
        attrs = {
            "init_params_": self.init_params_,
            "registry_": self.registry_,
            "config": self.config.to_dict(),
            "obs_keys_": self.obs_keys_,
            "layer_": self.layer_,
            "gene_symbols_key_": self.gene_symbols_key_,
            "max_length_": self.max_length_,
            "legacy_": self.legacy_,
            "metadata_fields_": self.metadata_fields_,
            "is_trained_": self.is_trained_,
            "trained_tasks_": self.trained_tasks_,
            "calibration_": getattr(self, "calibration_", None),
            "history_": {k: v.reset_index().to_dict(orient="list") for k, v in (self.history_ or {}).items()},
        }
        extra = {"debin_table": self.debin_table_} if self.debin_table_ is not None else {}
        _io.write(
            dir_path,
            attrs=attrs,
            var_names=self.vocab.genes,
            state_dict=self.module.state_dict(),
            extra=extra,
            vocab_json=json.dumps(self.vocab.to_dict()),
            overwrite=overwrite,
            write_adata=(lambda file: self.adata.write_h5ad(file, **kwargs))
            if save_anndata and self.adata is not None
            else None,
        )

    @classmethod
    def load(
        cls, dir_path: str | os.PathLike, adata: AnnData | None = None, device: str | torch.device = "cpu", **kwargs
    ) -> SCMULAN:
        """Load a model saved with :meth:`save` (never unpickles code).

        Parameters
        ----------
        dir_path
            The directory.
        adata
            Attach this AnnData (registered with the saved setup if it is not registered yet); with
            ``save_anndata=True`` the saved one is used when ``adata`` is None.
        device
            Where to put the weights.
        **kwargs
            Unused (scvi-tools compatibility).
        """
        meta, weights, extra, vocab = _io.read(dir_path)
        attrs = meta["attr_dict"]
        net = CSentenceTransformer(TransformerConfig.from_dict(attrs["config"]))
        try:
            net.load_state_dict(weights)
        except RuntimeError as e:
            msg = f"The weights in {os.fspath(dir_path)!r} do not fit the saved configuration (saved by an incompatible version?): {e}"
            raise ValueError(msg) from e
        registry = attrs["registry_"] or _empty_registry()
        model = cls._from_parts(
            vocab,
            net,
            registry=registry,
            obs_keys=attrs["obs_keys_"],
            layer=attrs["layer_"],
            gene_symbols=attrs["gene_symbols_key_"],
            max_length=attrs["max_length_"],
            legacy=attrs["legacy_"],
            metadata_fields=attrs["metadata_fields_"],
            debin_table=extra.get("debin_table"),
        )
        model.init_params_ = attrs["init_params_"]
        model.is_trained_ = attrs["is_trained_"]
        # saves older than trained_tasks_ did not record it: assume every task (as they were never refused)
        model.trained_tasks_ = list(attrs.get("trained_tasks_", TASKS if model.is_trained_ else []))
        model.calibration_ = attrs.get("calibration_")  # absent from saves older than calibration
        model.history_ = {k: pd.DataFrame(v).set_index(v and list(v)[0]) for k, v in attrs["history_"].items()}
        saved = os.path.join(dir_path, _io.ADATA_FILE)
        if adata is None and os.path.exists(saved):
            import anndata as ad

            adata = ad.read_h5ad(saved)
        if adata is not None:
            model._attach(adata)
        model.module.to(resolve_device(device)).eval()
        return model

    def _attach(self, adata: AnnData) -> None:
        """Attach (and if needed register) an AnnData with the saved setup."""
        try:
            manager = self._get_most_recent_anndata_manager(adata, required=False)
        except ValueError:  # a copy of registered data (e.g. the saved adata.h5ad): register it afresh
            for key in ("_scvi_uuid", "_scvi_manager_uuid"):
                adata.uns.pop(key, None)
            manager = None
        # the metadata columns must hold categories of the vocabulary and the matrix log-normalised values (checked
        # before registering: nothing is written to a refused AnnData)
        registry = manager.registry if manager is not None else self.registry_
        layer = (registry.get("setup_args") or {}).get("layer")
        check_log_normalized(self._matrix(adata, layer), where="SCMULAN.load(dir_path, adata)")
        self._check_known_categories(adata, self._registered_obs_keys(registry))
        if manager is None:
            setup = self.registry_.get("setup_args") or {}
            type(self).setup_anndata(adata, **setup)
            manager = self._get_most_recent_anndata_manager(adata, required=True)
        self._adata, self._adata_manager = adata, manager
        self._register_manager_for_instance(manager)

    def _check_known_categories(self, adata: AnnData, obs_keys: dict[str, str]) -> None:
        """Refuse metadata columns with categories (or fields) the model's vocabulary does not have."""
        for field, key in obs_keys.items():
            if key not in adata.obs:
                continue  # registration names the missing column
            values = adata.obs[key].astype("string").dropna().unique()
            if field not in self.vocab.fields:
                unknown = sorted(str(v) for v in values)
            else:
                unknown = sorted(str(v) for v in values if not self.vocab.has_token(field, str(v)))
            if not unknown:
                continue
            msg = (
                f"`SCMULAN.load(dir_path, adata)`: `adata.obs[{key!r}]` ({field!r}) has categories the model does not "
                f"know: {unknown[:5]}{' …' if len(unknown) > 5 else ''}"
            )
            hints = self.vocab.suggestions(field, unknown[:3]) if field in self.vocab.fields else {}
            if hints:
                msg += " (did you mean " + "; ".join(f"{c} for {u!r}" for u, c in hints.items()) + "?)"
            msg += (
                ". Load the model without `adata`, then fine-tune with `model.finetune(adata)` to add them to the "
                "vocabulary."
            )
            raise ValueError(msg)

    def calibrate(self, adata: AnnData | None = None, *, quantile: float = 0.95, **kwargs: Any) -> Any:
        """Calibrate annotation confidences and fit the open-set threshold on labelled held-out cells.

        ``train`` calls it with its validation cells (``train_size`` < 1); call it yourself with cells the model
        never trained on, e.g. after :meth:`finetune` or for a model trained on all its cells. Afterwards
        :meth:`annotate` reports calibrated confidences and can flag cells of unseen types (``open_set=True``).
        The result is saved with the model.

        Parameters
        ----------
        adata
            Held-out cells with the registered cell-type columns; ``None``: the model's validation cells.
        quantile
            Fraction of held-out cells of known types that stay below the open-set threshold (the rest are the
            expected false "Unknown" calls).
        **kwargs
            ``max_reference_cells``, ``batch_size``, ``device``, ``seed`` (see
            ``scmulan.model.calibrate``).

        Returns
        -------
        The fitted ``scmulan.model.Calibration`` (held-out ECE before and after, the threshold).
        """
        from scmulan.model._calibration import calibrate

        return calibrate(self, adata, quantile=quantile, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name: str = "scmulan-v1",
        *,
        path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        progressbar: bool = True,
    ) -> SCMULAN:
        """Load a pretrained model, downloading its files once (the same as :func:`scmulan.load_pretrained`).

        The files are fetched with pooch (SHA-256 checked, cached) and converted from the original format. To
        fine-tune on your own labelled data: :meth:`setup_anndata` on it, then :meth:`finetune`.

        Parameters
        ----------
        name
            ``"scmulan-v1"``: the original scMulan release (24 layers, 20 heads, width 1120, 368.8M parameters;
            7 organs, 109 fine / 29 coarse cell types, 2,000 genes).
        path
            Files downloaded yourself, for offline machines: a directory with ``ckpt_scMulan.pt`` and
            ``meta_info.pt``, or the checkpoint file (``meta_info.pt`` next to it, or downloaded).
        cache_dir
            Download cache (default: ``$SCMULAN_CACHE``, else pooch's per-user cache folder).
        device
            Where to put the weights (``"auto"`` picks a GPU when there is one).
        progressbar
            Show a download progress bar.

        Examples
        --------
        >>> model = scmulan.SCMULAN.from_pretrained("scmulan-v1")  # doctest: +SKIP
        >>> scmulan.SCMULAN.setup_anndata(ref, cell_type_key="cell_type")  # doctest: +SKIP
        >>> model.finetune(ref, max_epochs=5)  # doctest: +SKIP
        """
        from scmulan.hub import fetch_pretrained

        files = fetch_pretrained(name, path=path, cache_dir_=cache_dir, progressbar=progressbar)
        return cls.from_legacy_checkpoint(files["checkpoint"], files["meta_info"], device=device)

    def push_to_hub(self, repo_id: str, **kwargs: Any):
        """Publish this trained model on the Hugging Face Hub, with a model card (``pip install 'scmulan[hub]'``).

        The repository gets the files of :meth:`save`, scvi-hub's metadata JSON and a ``README.md`` model card
        naming the tasks, vocabulary, training data and metrics (:func:`scmulan.hub.model_card`).

        Parameters
        ----------
        repo_id
            ``"user/name"`` or ``"organisation/name"``.
        **kwargs
            ``token``, ``private``, ``revision``, ``commit_message``, ``save_anndata`` and the card's content
            (``description``, ``training_data``, ``training_data_url``, ``metrics``, ``license``…): see
            :func:`scmulan.hub.push_to_hub`.

        Returns
        -------
        The upload's ``huggingface_hub.CommitInfo`` (its ``oid`` is the commit to pin when loading).

        Examples
        --------
        >>> model.push_to_hub("me/scmulan-pbmc", training_data="pbmc68k", metrics={"macro F1": 0.91})  # doctest: +SKIP
        """
        from scmulan.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_hub(
        cls,
        repo_id: str,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        adata: AnnData | None = None,
        device: str | torch.device = "cpu",
        token: str | None = None,
        local_files_only: bool = False,
        pull_anndata: bool = False,
    ) -> SCMULAN:
        """Load a model published with :meth:`push_to_hub`, downloading it once (the Hugging Face cache).

        Parameters
        ----------
        repo_id
            ``"user/name"``.
        revision
            Branch, tag or commit (default: ``main``); pin a commit to get the same model every time.
        cache_dir
            The Hub cache (default: ``$HF_HUB_CACHE``, else ``~/.cache/huggingface/hub``).
        adata
            Attach this AnnData, as :meth:`load` does.
        device
            Where to put the weights (``"auto"`` picks a GPU when there is one).
        token
            A Hub token, for private or gated repositories.
        local_files_only
            Never use the network (also the case with ``HF_HUB_OFFLINE=1``): load the cached copy.
        pull_anndata
            Also download the training data published with the model (attached when ``adata`` is ``None``).

        Examples
        --------
        >>> model = scmulan.SCMULAN.from_hub("me/scmulan-pbmc", revision="v1.0")  # doctest: +SKIP
        """
        from scmulan.hub import download_from_hub

        folder = download_from_hub(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            pull_anndata=pull_anndata,
        )
        logger.info("loading %s from %s", repo_id, folder)
        return cls.load(folder, adata=adata, device=device)

    @classmethod
    def from_legacy_checkpoint(
        cls, ckpt_path: str | os.PathLike, meta_info_path: str | os.PathLike, *, device: str | torch.device = "cpu"
    ) -> SCMULAN:
        """Import an original scMulan checkpoint and its vocabulary (never unpickles code).

        Parameters
        ----------
        ckpt_path
            The original ``ckpt_scMulan.pt`` (``{"model": state_dict, "model_args": {...}}``).
        meta_info_path
            The original ``meta_info.pt`` vocabulary.
        device
            Where to put the weights.
        """
        from scmulan.hub import load_legacy_checkpoint

        config, state = load_legacy_checkpoint(ckpt_path)
        vocab = Vocabulary.from_legacy_meta_info(meta_info_path)
        if len(vocab) != config.vocab_size:
            msg = (
                f"The vocabulary in {os.fspath(meta_info_path)!r} has {len(vocab)} entities but the checkpoint's "
                f"model has {config.vocab_size}: they do not belong together."
            )
            raise ValueError(msg)
        net = CSentenceTransformer(config)
        net.load_state_dict(state)
        model = cls._from_parts(
            vocab,
            net,
            obs_keys={},
            layer=None,
            gene_symbols=None,
            max_length=DEFAULT_MAX_LENGTH,
            legacy=True,
            metadata_fields=["organ", "region"],
        )
        model.is_trained_ = True
        model.module.to(resolve_device(device)).eval()
        return model


def _gene_names(adata: AnnData, gene_symbols: str | None) -> list[str]:
    """The data's gene identifiers (unresolved ones left out).

    From ``var["scmulan_gene"]`` (written by :func:`scmulan.pp.prepare`), else a var column, else the var names.
    """
    if "scmulan_gene" in adata.var:
        names = adata.var["scmulan_gene"].astype("string")
    elif gene_symbols is not None:
        names = adata.var[gene_symbols].astype("string")
    else:
        names = pd.Series(adata.var_names, dtype="string")
    names = names.dropna()
    names = names[names != ""]
    if names.duplicated().any():
        msg = (
            f"{int(names.duplicated().sum())} gene names are duplicated; run `scmulan.pp.prepare(adata)` to resolve "
            "them before building a model."
        )
        raise ValueError(msg)
    if len(names) == 0:
        msg = "The AnnData has no usable gene names."
        raise ValueError(msg)
    return names.tolist()
