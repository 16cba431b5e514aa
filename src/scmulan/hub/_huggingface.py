"""Sharing models on the Hugging Face Hub: publish a trained model, download a published one.

A repository holds the files of :meth:`SCMULAN.save <scmulan.SCMULAN.save>` (its metadata, ``model.safetensors``,
``vocab.json``, optionally ``adata.h5ad``), scvi-hub's ``_scvi_required_metadata.json`` and a model card
``README.md`` (:func:`~scmulan.hub.model_card`). ``huggingface_hub`` is an optional dependency
(``pip install 'scmulan[hub]'``), imported only here. Loading is
:meth:`SCMULAN.from_hub <scmulan.SCMULAN.from_hub>` (the model layer, above this one).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._model_card import CARD_FILE, METADATA_FILE, MODEL_CLS_NAME, hub_metadata, model_card

if TYPE_CHECKING:
    from scmulan.model import SCMULAN

logger = logging.getLogger(__name__)

# The files of SCMULAN.save: its metadata (model.json; model.pt in saves of scmulan < 0.2), weights and vocabulary.
META_FILES = ("model.json", "model.pt")
MODEL_FILES = ("model.safetensors", "vocab.json")
ADATA_FILE = "adata.h5ad"


def _huggingface_hub():
    try:
        import huggingface_hub
    except ImportError as e:
        msg = "Sharing models on the Hugging Face Hub needs `huggingface_hub`: `pip install 'scmulan[hub]'`."
        raise ImportError(msg) from e
    return huggingface_hub


def save_for_hub(
    model: SCMULAN,
    dir_path: str | os.PathLike,
    *,
    repo_id: str | None = None,
    overwrite: bool = False,
    save_anndata: bool = False,
    description: str | None = None,
    training_data: str | None = None,
    training_data_url: str | None = None,
    training_code_url: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    license: str | None = None,
    tissues: Sequence[str] | None = None,
) -> Path:
    """Write the folder that :func:`push_to_hub` uploads: the saved model, its card and scvi-hub's metadata.

    The folder also loads with :meth:`SCMULAN.load <scmulan.SCMULAN.load>` and with scvi-tools'
    ``scvi.hub.HubModel(dir_path).load_model(adata)``. Use it to check the card before publishing, or to upload
    the folder yourself.

    Parameters
    ----------
    model
        A trained model.
    dir_path
        Folder to write.
    repo_id
        The Hub repository the card's loading example names.
    overwrite
        Replace a model already saved in ``dir_path``.
    save_anndata
        Also write the registered AnnData (``adata.h5ad``; published with the model).
    description, training_data, training_data_url, training_code_url, metrics, license, tissues
        The card's content: see :func:`model_card`.

    Returns
    -------
    The folder.
    """
    _huggingface_hub()  # the card needs it: fail before writing anything
    if not model.is_trained_:
        msg = "The model is not trained: train it (`model.train(...)`) or fine-tune it before publishing it."
        raise ValueError(msg)
    card = model_card(
        model,
        repo_id=repo_id,
        description=description,
        training_data=training_data,
        training_data_url=training_data_url,
        training_code_url=training_code_url,
        metrics=metrics,
        license=license,
        tissues=tissues,
    )
    path = Path(dir_path)
    model.save(path, overwrite=overwrite, save_anndata=save_anndata)
    (path / CARD_FILE).write_text(card, encoding="utf-8")
    meta = hub_metadata(model, training_data_url=training_data_url)
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=4), encoding="utf-8")
    return path


def push_to_hub(
    model: SCMULAN,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_repo: bool = True,
    save_anndata: bool = False,
    **card: Any,
):
    """Publish a trained model on the Hugging Face Hub (model files, model card and scvi-hub metadata).

    Parameters
    ----------
    model
        A trained model.
    repo_id
        ``"user/name"`` or ``"organisation/name"``.
    token
        A Hub token with write access (default: ``$HF_TOKEN`` or the one saved by ``hf auth login``).
    private
        Create the repository as private (only when it does not exist yet).
    revision
        Branch to push to (default: ``main``).
    commit_message
        Message of the upload's commit.
    create_repo
        Create the repository if it does not exist (an existing one is kept).
    save_anndata
        Also publish the registered AnnData (``adata.h5ad``).
    **card
        The card's content (``description``, ``training_data``, ``training_data_url``, ``training_code_url``,
        ``metrics``, ``license``, ``tissues``): see :func:`model_card`.

    Returns
    -------
    The upload's ``huggingface_hub.CommitInfo`` (its ``oid`` is the commit to pin with ``revision=``).

    Examples
    --------
    >>> model.push_to_hub(
    ...     "me/scmulan-pbmc",
    ...     training_data="pbmc68k: 700 PBMCs (10x 3'), 11 fine cell types",
    ...     metrics={"annotation macro-F1 (held-out)": 0.91},
    ...     license="mit",
    ... )  # doctest: +SKIP
    """
    hf = _huggingface_hub()
    api = hf.HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="scmulan-hub-") as tmp:
        folder = save_for_hub(model, Path(tmp) / "model", repo_id=repo_id, save_anndata=save_anndata, **card)
        if create_repo:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload scmulan {MODEL_CLS_NAME} model",
        )
    logger.info("pushed the model to %s", getattr(info, "commit_url", repo_id))
    return info


def download_from_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
    local_files_only: bool = False,
    pull_anndata: bool = False,
) -> Path:
    """Download (or find in the local cache) a model repository's files; the folder of its snapshot.

    Only the model's files, card and metadata are downloaded (and ``adata.h5ad`` with ``pull_anndata``).
    Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) the cached snapshot is used.

    Parameters
    ----------
    repo_id
        ``"user/name"``.
    revision
        Branch, tag or commit (default: ``main``). Pin a commit to get the same model every time.
    cache_dir
        The Hub cache (default: ``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``).
    token
        A Hub token, for private or gated repositories.
    local_files_only
        Never use the network.
    pull_anndata
        Also download the training data published with the model, if any.
    """
    hf = _huggingface_hub()
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    patterns = [*META_FILES, *MODEL_FILES, CARD_FILE, METADATA_FILE, *([ADATA_FILE] if pull_anndata else [])]
    where = f"{repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    try:
        folder = hf.snapshot_download(
            repo_id,
            repo_type="model",
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            allow_patterns=patterns,
        )
    except RevisionNotFoundError as e:
        msg = f"The Hugging Face Hub repository {repo_id!r} has no revision {revision!r}: pass a branch, tag or commit it has."
        raise ValueError(msg) from e
    except RepositoryNotFoundError as e:
        msg = (
            f"No model repository {repo_id!r} on the Hugging Face Hub (or it is private or gated): check the name, "
            "or pass a `token=` that may read it (or log in with `hf auth login`)."
        )
        raise ValueError(msg) from e
    except LocalEntryNotFoundError as e:
        msg = (
            f"The model {where} is not in the local Hugging Face cache and the Hub could not be reached (offline, "
            "`HF_HUB_OFFLINE=1` or `local_files_only=True`). Download it once with network access, or pass the "
            "`cache_dir=` that holds it."
        )
        raise OSError(msg) from e
    folder = Path(folder)
    _check_model_repo(folder, where)
    return folder


def _check_model_repo(folder: Path, where: str) -> None:
    """Refuse a downloaded repository that does not hold an scmulan model, naming what it holds."""
    meta_file = folder / METADATA_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        cls = meta.get("model_cls_name")
        if cls != MODEL_CLS_NAME:
            msg = (
                f"The Hugging Face Hub repository {where} holds a {cls} model of "
                f"{meta.get('model_parent_module', 'scvi.model')}, not an scmulan model: load it with "
                f"`scvi.hub.HubModel.pull_from_huggingface_hub({where.split()[0]})`."
            )
            raise ValueError(msg)
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in META_FILES):
        missing.insert(0, META_FILES[0])
    if missing:
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        msg = (
            f"The Hugging Face Hub repository {where} holds no scmulan model: {missing} are missing (it has "
            f"{found or 'none of the model files'}). Check the repository and revision, or publish a model to it "
            "with `model.push_to_hub(repo_id)`."
        )
        raise ValueError(msg)
