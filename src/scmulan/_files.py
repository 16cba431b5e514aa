"""Reading and writing scmulan's files safely: errors that name the file and the fix, no pickled code, atomic writes.

Every reader here raises a :class:`DamagedFileError` (a :class:`ValueError`) or a :class:`FileNotFoundError` whose
message starts with the file's path, says what is wrong with it (truncated, not JSON at line N, not a PyTorch file,
…) and how to get a good copy. None of them passes on PyTorch's advice to retry with ``weights_only=False``: that
would run whatever code the file holds.

Writers go through :func:`atomic_path`: the content is written to a temporary file in the same directory and moved
over the target with :func:`os.replace`, so that an interrupted write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: How to get a good copy of a file that cannot be read (the default fix named by the errors).
REPLACE_HINT = "Replace it with a complete copy (download or copy it again, or save it again)."
# first bytes of a file written by torch.save: a zip archive, or the legacy (pre-1.6) pickle format
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


class DamagedFileError(ValueError):
    """A file that exists but cannot be read as what it should be (truncated, another format, edited)."""


def human_size(n_bytes: int) -> str:
    """``"812 bytes"``, ``"12 kB"``, ``"48.2 MB"``, ``"1.47 GB"`` (decimal units, three significant digits)."""
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    value = float(n_bytes)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.3g} {unit}"
    raise AssertionError  # unreachable


def _sizes(actual: int, expected: int) -> str:
    """``"12 MB of 48 MB"``; exact byte counts where the rounded sizes would read the same."""
    shown, needed = human_size(actual), human_size(expected)
    if shown == needed:
        return f"{actual:,} of {expected:,} bytes"
    return f"{shown} of {needed}"


def check_exists(path: str | os.PathLike, *, what: str, fix: str = REPLACE_HINT) -> Path:
    """``path`` as a :class:`~pathlib.Path` after checking it is an existing file (else a message naming ``what``)."""
    path = Path(path)
    if path.is_dir():
        msg = f"{os.fspath(path)} is a directory, not {what}. {fix}"
        raise DamagedFileError(msg)
    if not path.is_file():
        msg = f"{os.fspath(path)} does not exist ({what} expected there). {fix}"
        raise FileNotFoundError(msg)
    return path


# ---------------------------------------------------------------------------------------------- JSON
def read_json(path: str | os.PathLike, *, what: str = "a JSON file", fix: str = REPLACE_HINT) -> Any:
    """Parse a JSON file; a damaged one raises a :class:`DamagedFileError` naming the file, line and column.

    Parameters
    ----------
    path
        The file.
    what
        What the file should hold, for the messages (``"the model's vocabulary"``).
    fix
        The sentence telling the user how to get a good copy.
    """
    path = check_exists(path, what=what, fix=fix)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        msg = f"{os.fspath(path)} is not a text file (byte {e.start} is not UTF-8), so it is not {what}. {fix}"
        raise DamagedFileError(msg) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if not text.strip():
            problem = "is empty"
        elif not text[e.pos :].strip() or e.msg.startswith("Unterminated string"):  # the text stops mid-value
            end = json.JSONDecodeError("", text, len(text.rstrip()))
            problem = f"ends early (line {end.lineno}, column {end.colno}): it is truncated"
        else:
            problem = f"is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        msg = f"{os.fspath(path)} {problem}, so it cannot be read as {what}. {fix}"
        raise DamagedFileError(msg) from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same directory and :func:`os.replace`."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- safetensors
def safetensors_header(path: str | os.PathLike, *, what: str = "safetensors weights", fix: str = REPLACE_HINT) -> dict:
    """The JSON header of a safetensors file, after checking the file holds every byte the header announces.

    The format is an 8-byte little-endian header length, the JSON header (each tensor's ``data_offsets`` into the
    data that follow, and an optional ``__metadata__`` of strings), then the data: the header gives the full size.

    Raises
    ------
    DamagedFileError
        ``"model.safetensors is truncated (12 MB of 48 MB)"``, or not a safetensors file at all.
    """
    path = check_exists(path, what=what, fix=fix)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        n_header = int.from_bytes(head, "little") if len(head) == 8 else 0
        if len(head) < 8 or n_header == 0 or n_header > 100_000_000:
            problem = "is empty" if size == 0 else f"is not a safetensors file ({human_size(size)}, no valid header)"
            msg = f"{os.fspath(path)} {problem}, so it cannot be read as {what}. {fix}"
            raise DamagedFileError(msg)
        raw = fh.read(n_header)
    if len(raw) < n_header:
        msg = (
            f"{os.fspath(path)} is truncated ({human_size(size)}, less than its own header announces), "
            f"so it cannot be read as {what}. {fix}"
        )
        raise DamagedFileError(msg)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, IndexError, ValueError):
        msg = f"{os.fspath(path)} is not a safetensors file (its header is not valid), so it cannot be read as {what}. {fix}"
        raise DamagedFileError(msg) from None
    expected = 8 + n_header + max(ends, default=0)
    if size < expected:
        msg = f"{os.fspath(path)} is truncated ({_sizes(size, expected)}), so it cannot be read as {what}. {fix}"
        raise DamagedFileError(msg)
    return header


def load_safetensors(path: str | os.PathLike, *, what: str = "safetensors weights", fix: str = REPLACE_HINT) -> dict:
    """``safetensors.torch.load_file`` after :func:`safetensors_header`'s checks; any other defect named too."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    safetensors_header(path, what=what, fix=fix)
    try:
        return load_file(path)
    except (SafetensorError, OSError, RuntimeError) as e:
        msg = f"{os.fspath(path)} is damaged ({e}), so it cannot be read as {what}. {fix}"
        raise DamagedFileError(msg) from None


# ---------------------------------------------------------------------------------------------- torch files
def torch_load_plain(path: str | os.PathLike, *, what: str = "a PyTorch file", fix: str = REPLACE_HINT) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, never pickled code.

    A file that is empty, truncated, of another format, or holds other Python objects raises a
    :class:`DamagedFileError` naming it; PyTorch's own advice (retrying with ``weights_only=False``, which would run
    the file's code) is never passed on.
    """
    import pickle

    import torch

    path = check_exists(path, what=what, fix=fix)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(4)
    problem = None
    if size == 0:
        problem = "is empty"
    elif head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        problem = f"is truncated ({human_size(size)}; its zip archive has no end)"
    elif not head.startswith(_ZIP_MAGIC) and not head.startswith(_PICKLE_MAGIC):
        problem = f"is not a file written by torch.save ({human_size(size)} of another format)"
    if problem is None:
        try:
            with warnings.catch_warnings():  # torch's remark on pickle protocols: the errors below say it all
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            problem = (
                "holds Python objects other than tensors and plain containers, or is damaged: scmulan never runs "
                "code stored in a file"
            )
        except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError) as e:
            reason = str(e).split(". ")[0].strip() if "weights_only" not in str(e) else ""
            problem = f"is damaged or truncated ({type(e).__name__}{': ' + reason if reason else ''})"
    msg = f"{os.fspath(path)} {problem}, so it cannot be read as {what}. {fix}"
    raise DamagedFileError(msg)


# ---------------------------------------------------------------------------------------------- HDF5 (.h5ad, .h5mu)
def check_hdf5(path: str | os.PathLike, *, what: str = "an HDF5 file", fix: str = REPLACE_HINT) -> Path:
    """``path`` after checking it opens as a complete HDF5 file (else a message: empty, truncated, another format).

    h5py's own message names neither the file nor the cause in words; the sizes of a truncated file are its.
    """
    import re

    import h5py

    path = check_exists(path, what=what, fix=fix)
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as e:
        reason = str(e)
        if path.stat().st_size == 0:
            problem = "is empty"
        elif "truncated file" in reason:
            sizes = re.search(r"eof = (\d+).*stored_eof = (\d+)", reason)
            of = f"{_sizes(int(sizes[1]), int(sizes[2]))}; " if sizes else ""
            problem = f"is truncated ({of}a copy or download was cut short)"
        else:
            problem = "is not an HDF5 file"
        msg = f"{os.fspath(path)} {problem}, so it cannot be read as {what}. {fix}"
        raise DamagedFileError(msg) from None
    return path


# ---------------------------------------------------------------------------------------------- atomic writes
def partial_name(path: str | os.PathLike, tag: str) -> Path:
    """The temporary name of ``path`` while it is written: ``dir/.model.partial-<tag>.safetensors``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial-{tag}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; after the block, move it over ``path`` (:func:`os.replace`).

    If the block raises (or the process dies), ``path`` is left as it was and the temporary file is removed
    (a process killed mid-write leaves a hidden ``.name.partial-…`` file, which the next save clears).
    """
    path = Path(path)
    partial = partial_name(path, uuid.uuid4().hex[:12])
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
