"""Saving, loading, importing and publishing :class:`~scmulan.SCMULAN` models (the files and where they come from)."""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from anndata import AnnData

from scmulan._device import resolve_device
from scmulan._validation import check_log_normalized
from scmulan.model import _io
from scmulan.model._novelty import join_arrays, split_arrays
from scmulan.model._parts import new_parts
from scmulan.model._query import expression
from scmulan.model._registration import check_known_categories, empty_registry, registered_obs_keys
from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.sentence import TASKS
from scmulan.vocab import Vocabulary

if TYPE_CHECKING:
    from scmulan.model._model import SCMULAN

logger = logging.getLogger(__name__)
DEFAULT_MAX_LENGTH = 1550  # the original's training block size


def save(
    model: SCMULAN, dir_path: str | os.PathLike, overwrite: bool = False, save_anndata: bool = False, **kwargs
) -> None:
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
    calibration, calibration_arrays = split_arrays(getattr(model, "calibration_", None))
    attrs = {
        "init_params_": model.init_params_,
        "registry_": model.registry_,
        "config": model.config.to_dict(),
        "obs_keys_": model.obs_keys_,
        "layer_": model.layer_,
        "gene_symbols_key_": model.gene_symbols_key_,
        "max_length_": model.max_length_,
        "legacy_": model.legacy_,
        "metadata_fields_": model.metadata_fields_,
        "is_trained_": model.is_trained_,
        "trained_tasks_": model.trained_tasks_,
        "calibration_": calibration,
        "history_": {k: v.reset_index().to_dict(orient="list") for k, v in (model.history_ or {}).items()},
    }
    tables = {"debin_table": model.debin_table_, "gene_counts": getattr(model, "gene_counts_", None)}
    extra = {name: table for name, table in tables.items() if table is not None} | calibration_arrays
    _io.write(
        dir_path,
        attrs=attrs,
        var_names=model.vocab.genes,
        state_dict=model.module.state_dict(),
        extra=extra,
        vocab_json=json.dumps(model.vocab.to_dict()),
        overwrite=overwrite,
        write_adata=(lambda file: model.adata.write_h5ad(file, **kwargs))
        if save_anndata and model.adata is not None
        else None,
    )


def load(
    cls: type[SCMULAN],
    dir_path: str | os.PathLike,
    adata: AnnData | None = None,
    device: str | torch.device = "cpu",
    **kwargs,
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
    registry = attrs["registry_"] or empty_registry()
    parts = new_parts(
        vocab,
        net,
        obs_keys=attrs["obs_keys_"],
        layer=attrs["layer_"],
        gene_symbols_key=attrs["gene_symbols_key_"],
        max_length=attrs["max_length_"],
        legacy=attrs["legacy_"],
        metadata_fields=attrs["metadata_fields_"],
        debin_table=extra.get("debin_table"),
        gene_counts=extra.get("gene_counts"),  # absent from saves older than the length prior
        # saves older than trained_tasks_ did not record it: assume every task (as they were never refused)
        trained_tasks=attrs.get("trained_tasks_", TASKS if attrs["is_trained_"] else []),
        is_trained=attrs["is_trained_"],
        calibration=join_arrays(attrs.get("calibration_"), extra),  # absent from saves older than calibration
    )
    model = cls._from_parts(parts, registry)
    model.init_params_ = attrs["init_params_"]
    model.history_ = {k: pd.DataFrame(v).set_index(v and list(v)[0]) for k, v in attrs["history_"].items()}
    saved = os.path.join(dir_path, _io.ADATA_FILE)
    if adata is None and os.path.exists(saved):
        import anndata as ad

        adata = ad.read_h5ad(saved)
    if adata is not None:
        attach(model, adata)
    model.module.to(resolve_device(device)).eval()
    return model


def attach(model: SCMULAN, adata: AnnData) -> None:
    """Attach (and if needed register) an AnnData with the saved setup."""
    try:
        manager = model._get_most_recent_anndata_manager(adata, required=False)
    except ValueError:  # a copy of registered data (e.g. the saved adata.h5ad): register it afresh
        for key in ("_scvi_uuid", "_scvi_manager_uuid"):
            adata.uns.pop(key, None)
        manager = None
    # the metadata columns must hold categories of the vocabulary and the matrix log-normalised values (checked
    # before registering: nothing is written to a refused AnnData)
    registry = manager.registry if manager is not None else model.registry_
    layer = (registry.get("setup_args") or {}).get("layer")
    check_log_normalized(expression(adata, layer), where="SCMULAN.load(dir_path, adata)")
    check_known_categories(model.vocab, adata, registered_obs_keys(registry))
    if manager is None:
        setup = model.registry_.get("setup_args") or {}
        type(model).setup_anndata(adata, **setup)
        manager = model._get_most_recent_anndata_manager(adata, required=True)
    model._adata, model._adata_manager = adata, manager
    model._register_manager_for_instance(manager)


def from_pretrained(
    cls: type[SCMULAN],
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


def push_to_hub(model: SCMULAN, repo_id: str, **kwargs: Any):
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
    from scmulan.hub import push_to_hub as push

    return push(model, repo_id, **kwargs)


def from_hub(
    cls: type[SCMULAN],
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


def from_legacy_checkpoint(
    cls: type[SCMULAN],
    ckpt_path: str | os.PathLike,
    meta_info_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
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
    parts = new_parts(
        vocab,
        net,
        obs_keys={},
        max_length=DEFAULT_MAX_LENGTH,
        legacy=True,
        metadata_fields=["organ", "region"],
        is_trained=True,
    )
    model = cls._from_parts(parts)
    model.module.to(resolve_device(device)).eval()
    return model
