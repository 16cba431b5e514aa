"""Files of a saved :class:`~scmulan.SCMULAN`: JSON metadata, safetensors weights, vocabulary JSON; no pickle.

``dir/model.json``
    The model's metadata (``attr_dict`` with the init parameters, registry and settings, ``var_names``,
    ``model_name``, ``scmulan_version``): the content scvi-tools keeps in ``model.pt``, as JSON. It also records
    the ``save_id`` written into the weights' header, the SHA-256 of ``vocab.json`` and the CRC-32 of the
    weights, so that files of different saves are never combined and damaged weights are never used.
``dir/model.safetensors``
    The network's weights, plus extra arrays (the de-binning table) under ``scmulan.``-prefixed names.
``dir/vocab.json``
    The :class:`~scmulan.Vocabulary`.
``dir/adata.h5ad``
    Optional copy of the training data (``save_anndata=True``).

Saving writes every file under a temporary name in the directory first and then moves them into place
(:func:`os.replace`), ``model.json`` last: a save that fails or is killed leaves the previous model as it was.
Directories saved by earlier versions hold ``model.pt`` instead of ``model.json``; it is read with
``torch.load(weights_only=True)`` (tensors and plain containers only), and only when there is no ``model.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scmulan._files import DamagedFileError, load_safetensors, partial_name, read_json, safetensors_header
from scmulan._plain import plain
from scmulan._version import __version__

if TYPE_CHECKING:
    from scmulan.vocab import Vocabulary

logger = logging.getLogger(__name__)

META_FILE, WEIGHTS_FILE, VOCAB_FILE, ADATA_FILE = "model.json", "model.safetensors", "vocab.json", "adata.h5ad"
LEGACY_META_FILE = "model.pt"  # the metadata of directories saved by scmulan 0.1 (torch.save of containers)
MODEL_FILE = LEGACY_META_FILE  # former name of the constant
EXTRA_PREFIX = "scmulan."
FORMAT, FORMAT_VERSION = "scmulan-model", 1
# attr_dict entries SCMULAN.load needs
REQUIRED_ATTRS = (
    "init_params_",
    "registry_",
    "config",
    "obs_keys_",
    "layer_",
    "gene_symbols_key_",
    "max_length_",
    "legacy_",
    "metadata_fields_",
    "is_trained_",
    "history_",
)
_RESAVE = "Save the model again, or copy the whole directory again from where it came from."


def holds_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory saved by :meth:`SCMULAN.save <scmulan.SCMULAN.save>` (any version)."""
    path = Path(path)
    return (path / META_FILE).is_file() or (path / LEGACY_META_FILE).is_file()


def write(
    dir_path: str | os.PathLike,
    *,
    attrs: dict[str, Any],
    var_names: list[str],
    state_dict: dict[str, torch.Tensor],
    extra: dict[str, np.ndarray],
    vocab_json: str,
    overwrite: bool,
    write_adata: Callable[[Path], None] | None = None,
) -> Path:
    """Write the model's files atomically; refuses to overwrite an existing model unless ``overwrite``.

    Every file is first written under a temporary name in ``dir_path`` and then moved into place, the metadata
    (``model.json``) last. ``write_adata(path)``, if given, writes the AnnData file to ``path``. Replacing a model
    removes the files of the old one that the new one lacks (``adata.h5ad``, a former ``model.pt``).
    """
    from safetensors.torch import save_file

    path = Path(dir_path)
    if holds_model(path) and not overwrite:
        msg = f"{path} already holds a saved model; pass `overwrite=True` to replace it."
        raise ValueError(msg)
    if path.exists() and not path.is_dir():
        msg = f"{path} exists and is not a directory; pass a directory path to save the model in."
        raise ValueError(msg)
    path.mkdir(parents=True, exist_ok=True)
    _remove_partials(path)
    save_id = uuid.uuid4().hex
    staged: list[tuple[Path, Path]] = []

    def stage(name: str) -> Path:
        partial = partial_name(path / name, save_id[:12])
        staged.append((partial, path / name))
        return partial

    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        tensors.update({EXTRA_PREFIX + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extra.items()})
        metadata = {"format": "pt", "library": "scmulan", "save_id": save_id}
        weights_file = stage(WEIGHTS_FILE)
        save_file(tensors, weights_file, metadata=metadata)
        stage(VOCAB_FILE).write_text(vocab_json, encoding="utf-8")
        if write_adata is not None:
            write_adata(stage(ADATA_FILE))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_name": "SCMULAN",
            "scmulan_version": __version__,
            "save_id": save_id,
            "vocab_sha256": hashlib.sha256(vocab_json.encode("utf-8")).hexdigest(),
            "weights_crc32": file_crc32(weights_file),
            "attr_dict": plain(attrs),
            "var_names": list(var_names),
        }
        stage(META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for partial, final in staged:  # metadata last: it names the save the other files belong to
            os.replace(partial, final)
    finally:
        for partial, _ in staged:
            partial.unlink(missing_ok=True)
    stale = [LEGACY_META_FILE] + ([ADATA_FILE] if write_adata is None else [])
    for name in stale:
        if (path / name).is_file():
            logger.info("removing %s of the replaced model", path / name)
            (path / name).unlink()
    return path


def _remove_partials(path: Path) -> None:
    """Remove temporary files a killed save left behind (``.model.partial-….safetensors`` and the like)."""
    for name in (META_FILE, WEIGHTS_FILE, VOCAB_FILE, ADATA_FILE):
        stem, suffix = name.split(".", 1)
        for leftover in path.glob(f".{stem}.partial-*.{suffix}"):
            leftover.unlink(missing_ok=True)


def read(
    dir_path: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, np.ndarray], Vocabulary]:
    """Read a saved model: ``(metadata, weights, extra arrays, vocabulary)``; never unpickles code.

    Raises
    ------
    ValueError
        Naming the file and what is wrong with it: missing, truncated, not JSON (with the line), files of two
        different saves, metadata without the entries a model needs.
    """
    from scmulan.vocab import Vocabulary

    path = Path(dir_path)
    if not path.is_dir():
        msg = f"{os.fspath(path)} is not a directory; pass the directory a model was saved to (`SCMULAN.save`)."
        raise ValueError(msg)
    meta_file = path / META_FILE if (path / META_FILE).exists() else path / LEGACY_META_FILE
    missing = [f.name for f in (meta_file, path / WEIGHTS_FILE, path / VOCAB_FILE) if not f.exists()]
    if missing:
        if missing[0] in (META_FILE, LEGACY_META_FILE):
            missing[0] = META_FILE
        msg = f"{path} is not a saved scmulan model: missing {missing}. {_RESAVE}"
        raise ValueError(msg)
    if meta_file.name == META_FILE:
        meta = read_json(meta_file, what="a saved model's metadata", fix=_RESAVE)
    else:
        meta = _read_legacy_meta(meta_file)
    _check_meta(meta, meta_file)
    header = safetensors_header(path / WEIGHTS_FILE, what="the model's weights", fix=_RESAVE)
    vocab_dict = read_json(path / VOCAB_FILE, what="the model's vocabulary", fix=_RESAVE)
    _check_same_save(meta, header, (path / VOCAB_FILE).read_bytes(), path)
    _check_weights_hash(meta, path / WEIGHTS_FILE)
    tensors = load_safetensors(path / WEIGHTS_FILE, what="the model's weights", fix=_RESAVE)
    extra = {k[len(EXTRA_PREFIX) :]: v.numpy() for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    try:
        vocab = Vocabulary.from_dict(vocab_dict)
    except ValueError as e:
        msg = f"{path / VOCAB_FILE} is not a valid scmulan vocabulary ({e}). {_RESAVE}"
        raise DamagedFileError(msg) from None
    return meta, weights, extra, vocab


def file_crc32(path: Path, chunk: int = 1 << 23) -> str:
    """The CRC-32 of a file as 8 hex digits, read in 8 MiB chunks (about 1 s for the 1.5 GB of scmulan-v1).

    A checksum against accidental damage (a flipped bit, a partial overwrite), fast enough to run on every load;
    it is no defence against deliberate edits, which could change ``model.json`` too.
    """
    crc = 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _check_weights_hash(meta: dict[str, Any], weights: Path) -> None:
    """Refuse weights whose bytes changed since the save (a flipped bit, a partial overwrite): no silent errors."""
    expected = meta.get("weights_crc32")
    if expected is not None and file_crc32(weights) != expected:
        msg = (
            f"{weights} is damaged: its content is not the one saved (its CRC-32 differs from the one recorded in "
            f"{weights.with_name(META_FILE).name}). {_RESAVE}"
        )
        raise DamagedFileError(msg)


def _read_legacy_meta(meta_file: Path) -> dict[str, Any]:
    """``model.pt`` of a directory saved before ``model.json``: plain containers only."""
    from scmulan._files import torch_load_plain

    return torch_load_plain(meta_file, what="a saved model's metadata (model.pt)", fix=_RESAVE)


def _check_meta(meta: Any, meta_file: Path) -> None:
    """Refuse metadata without the entries :meth:`SCMULAN.load` needs, naming the file."""
    attrs = meta.get("attr_dict") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict):
        msg = f"{meta_file} is not the metadata of a saved scmulan model (no 'attr_dict' entry). {_RESAVE}"
        raise DamagedFileError(msg)
    lacking = [k for k in REQUIRED_ATTRS if k not in attrs]
    if lacking:
        msg = f"{meta_file} lacks the model settings {lacking} (written by another program, or edited). {_RESAVE}"
        raise DamagedFileError(msg)


def _check_same_save(meta: dict[str, Any], header: dict, vocab_json: bytes, path: Path) -> None:
    """Refuse weights or a vocabulary that belong to another save than ``model.json``."""
    if "save_id" not in meta:  # model.pt of an earlier version: nothing recorded
        return
    weights_id = (header.get("__metadata__") or {}).get("save_id")
    if weights_id != meta["save_id"]:
        msg = (
            f"{path / WEIGHTS_FILE} and {path / META_FILE} belong to different saves (a save was interrupted while "
            f"its files were moved into place, or files were copied from another model). {_RESAVE}"
        )
        raise DamagedFileError(msg)
    if meta.get("vocab_sha256") not in (None, hashlib.sha256(vocab_json).hexdigest()):
        msg = (
            f"{path / VOCAB_FILE} is not the vocabulary saved with {path / META_FILE} (it was edited or replaced). "
            f"{_RESAVE}"
        )
        raise DamagedFileError(msg)
