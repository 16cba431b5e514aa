"""Reading the original scMulan ``meta_info.pt`` and mapping its flat tokens onto (field, category) pairs."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Label sets of the original ``meta_info`` that are tokens, and the field each one feeds.
# ``study_id`` and ``donor_age`` are label sets too, but none of their strings is a token of its own.
LEGACY_LABEL_FIELDS: dict[str, str] = {
    "organ": "organ",
    "region": "region",
    "MCT": "coarse_cell_type",
    "cell_type": "cell_type",
    "donor_gender": "sex",
    "age_bin": "age",
    "seq_tech": "technology",
    "sample_status": "disease",
}

# Original task-token names -> canonical task names.
LEGACY_TASK_NAMES: dict[str, str] = {
    "<PCT>": "<annotate>",
    "<SPToken1>": "<generate>",
    "<SPToken3>": "<metadata>",
}

# When one string belongs to several label sets, the primary field (the block of the original layout the
# token sits in) is the first of these that contains it: organ block, cell-type block (fine labels before
# coarse-only ones), age, sample status, region, technology, sex.
_PRIMARY_PRECEDENCE = ("organ", "cell_type", "coarse_cell_type", "age", "disease", "region", "technology", "sex")

_TASK_PATTERN = re.compile(r"<PCT>|<SPToken\d+>")
_REQUIRED_KEYS = ("token_set", "gene_set", *LEGACY_LABEL_FIELDS)

# The only globals a ``meta_info.pt`` may reference: plain containers.
_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("collections", "OrderedDict"),
}


class _ContainerUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds builtin containers and never runs pickled code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        msg = (
            f"meta_info file references {module}.{name}; only plain Python containers are allowed in a vocabulary file"
        )
        raise pickle.UnpicklingError(msg)

    def persistent_load(self, pid: Any) -> Any:
        msg = "meta_info file contains tensor storage; a vocabulary file must hold plain Python containers only"
        raise pickle.UnpicklingError(msg)


def _read_torch_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(members) != 1:
            msg = f"{path} is a zip archive but not a torch save file with one data.pkl (found {len(members)})"
            raise ValueError(msg)
        with zf.open(members[0]) as fh:
            return _ContainerUnpickler(fh).load()


def read_meta_info(source: str | os.PathLike | Mapping[str, Any]) -> Mapping[str, Any]:
    """Read an original ``meta_info`` (``.pt`` torch zip, its JSON form, or an already loaded mapping).

    The ``.pt`` file is parsed with a restricted unpickler that rebuilds only builtin containers (``set``,
    ``frozenset``, ``OrderedDict`` plus the opcodes for dicts, lists, strings and numbers); no pickled code
    is executed and torch is not needed. Files that are neither a zip archive nor JSON (the pre-1.6 torch
    format) are handed to ``torch.load(..., weights_only=True)``.
    """
    if isinstance(source, Mapping):
        return source
    from scmulan._files import DamagedFileError, check_exists, read_json, torch_load_plain

    what, fix = "the original scMulan vocabulary (meta_info)", "Download meta_info.pt again, or pass a complete copy."
    path = check_exists(source, what=what, fix=fix)
    if zipfile.is_zipfile(path):
        try:
            data = _read_torch_zip(path)
        except pickle.UnpicklingError as e:  # refers to code: kept as an UnpicklingError, naming the file
            msg = f"{path} cannot be read as {what}: {e}."
            raise pickle.UnpicklingError(msg) from None
        except (EOFError, zipfile.BadZipFile, ValueError) as e:
            msg = f"{path} cannot be read as {what}: {e}. {fix}"
            raise DamagedFileError(msg) from None
    else:
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary: the old, non-zip torch serialisation (or a damaged file)
            data = torch_load_plain(path, what=what, fix=fix)
        else:  # text: the JSON form
            data = read_json(path, what=what, fix=fix)
    if not isinstance(data, Mapping):
        msg = f"{path} does not hold a meta_info mapping (got {type(data).__name__}). {fix}"
        raise DamagedFileError(msg)
    return data


def legacy_parts(meta: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
    """Map an original ``meta_info`` onto primary tokens and aliases.

    Returns
    -------
    The primary ``(field, category)`` of every id (id = index in ``token_set``) and the aliases
    ``(field, category, id)``: the other label sets sharing a metadata string, then the original task names.
    """
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        msg = (
            f"meta_info lacks the key(s) {missing}; expected the original scMulan meta_info with {list(_REQUIRED_KEYS)}"
        )
        raise ValueError(msg)
    token_set = [str(t) for t in meta["token_set"]]
    if len(set(token_set)) != len(token_set):
        dups = sorted({t for t in token_set if token_set.count(t) > 1})[:5]
        msg = f"meta_info['token_set'] has duplicated tokens, e.g. {dups}"
        raise ValueError(msg)
    genes = {str(g) for g in meta["gene_set"]}
    label_sets = {field: {str(x) for x in meta[key]} for key, field in LEGACY_LABEL_FIELDS.items()}
    clash = sorted(set().union(*(genes & labels for labels in label_sets.values())))
    if clash:
        msg = f"meta_info has strings that are both genes and metadata labels, e.g. {clash[:5]}"
        raise ValueError(msg)
    in_tokens = set(token_set)
    for field, labels in label_sets.items():
        absent = sorted(labels - in_tokens)
        if absent:
            msg = f"meta_info label set for {field!r} has labels that are not tokens, e.g. {absent[:5]}"
            raise ValueError(msg)

    canonical = tuple(LEGACY_LABEL_FIELDS.values())
    tokens: list[tuple[str, str]] = []
    field_aliases: list[tuple[str, str, int]] = []
    task_aliases: list[tuple[str, str, int]] = []
    for i, tok in enumerate(token_set):
        if tok == "<E>":
            tokens.append(("special", tok))
        elif tok in genes:
            tokens.append(("gene", tok))
        elif _TASK_PATTERN.fullmatch(tok):
            name = LEGACY_TASK_NAMES.get(tok, tok)
            tokens.append(("task", name))
            if name != tok:
                task_aliases.append(("task", tok, i))
        else:
            owners = [f for f in _PRIMARY_PRECEDENCE if tok in label_sets[f]]
            if not owners:
                msg = f"meta_info token {tok!r} (id {i}) is neither <E>, a gene, a task token nor a metadata label"
                raise ValueError(msg)
            tokens.append((owners[0], tok))
            field_aliases.extend((f, tok, i) for f in sorted(owners[1:], key=canonical.index))
    return tokens, field_aliases + task_aliases
