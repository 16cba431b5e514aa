"""What the commands share: options, reading and writing files, loading a model, preparing the data."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from scmulan.model import SCMULAN

logger = logging.getLogger("scmulan.cli")

PROG = "scmulan"
DATA_SUFFIXES = (".h5ad", ".h5mu")
LEGACY_CHECKPOINT = "ckpt_scMulan.pt"
LEGACY_META_INFO = "meta_info.pt"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows meaningful defaults and keeps the examples of the epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS or default == []
        hidden = unset or "default" in text or not action.option_strings
        return text if hidden else f"{text} (default: %(default)s)"


# ---------------------------------------------------------------------------------------------- options
def add_input_options(
    parser: argparse.ArgumentParser,
    *,
    what: str = "cells",
    output: str = "file to write (.h5ad or .h5mu)",
    match_genes: bool = True,
) -> None:
    """Positional input file, ``-o``, ``--overwrite``, ``--mod``, and the preparation options.

    ``match_genes``: the command matches the data's genes to a model's (``--min-overlap`` applies).
    """
    parser.add_argument("input", metavar="IN", help=f"{what}: .h5ad (AnnData) or .h5mu (MuData, see --mod)")
    parser.add_argument("-o", "--output", metavar="OUT", required=True, help=output)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--mod", default="rna", help="MuData modality holding the RNA data")
    group = parser.add_argument_group("preparation (scmulan.pp.prepare)")
    group.add_argument(
        "--prepare",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run scmulan.pp.prepare first (normalise counts, match genes); "
        "default: only when the data were not prepared yet (no uns['scmulan_prepare'])",
    )
    group.add_argument("--layer", default=None, help="layer holding the expression (default: X)")
    group.add_argument(
        "--gene-symbols", default=None, metavar="COLUMN", help="var column with gene symbols (default: var_names)"
    )
    group.add_argument(
        "--aliases",
        default=None,
        metavar="FILE",
        help="alias table: CSV, or TSV (.tsv/.txt, optionally .gz), with a header and two columns, "
        "alias and symbol, mapping aliases or previous symbols to symbols",
    )
    if match_genes:
        group.add_argument(
            "--min-overlap",
            type=fraction,
            default=0.05,
            metavar="FRACTION",
            help="smallest fraction of the model's genes the data must have",
        )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--meta-info``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        required=True,
        help="a pretrained name (scmulan-v1), a directory saved by SCMULAN.save or `scmulan train`, "
        f"a directory holding the original {LEGACY_CHECKPOINT} and {LEGACY_META_INFO}, "
        "or an original checkpoint file (.pt, with --meta-info)",
    )
    group.add_argument(
        "--meta-info",
        default=None,
        metavar="FILE",
        help=f"the original vocabulary ({LEGACY_META_INFO}) of an original checkpoint given as --model FILE "
        "(default: the meta_info.pt next to it)",
    )


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--device``."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="cells per forward pass")
    group.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, …")


def epochs_or_auto(text: str) -> int | str:
    """``"auto"`` or an ``int`` ≥ 1 (argparse ``type`` of ``--epochs``)."""
    return "auto" if text == "auto" else positive_int(text)


def positive_int(text: str) -> int:
    """An ``int`` ≥ 1 (argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def fraction(text: str) -> float:
    """A ``float`` between 0 and 1 (argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        msg = f"expected a fraction between 0 and 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


# ---------------------------------------------------------------------------------------------- files
def check_input(path: str | os.PathLike, *, suffixes: tuple[str, ...] = DATA_SUFFIXES) -> Path:
    """The input path, after checking it is an existing file with a known suffix."""
    path = Path(path)
    if not path.exists():
        msg = f"input file {os.fspath(path)!r} does not exist."
        raise FileNotFoundError(msg)
    if path.is_dir():
        msg = f"input {os.fspath(path)!r} is a directory; expected a file ({', '.join(suffixes)})."
        raise IsADirectoryError(msg)
    if path.suffix.lower() not in suffixes:
        msg = f"input {os.fspath(path)!r} has an unknown format; expected one of {', '.join(suffixes)}."
        raise ValueError(msg)
    return path


def check_output(path: str | os.PathLike, *, overwrite: bool, directory: bool = False) -> Path:
    """The output path, after checking it is free (or ``overwrite``) and, for files, its suffix."""
    path = Path(path)
    if not directory and path.suffix.lower() not in DATA_SUFFIXES:
        msg = f"output {os.fspath(path)!r} must end in {' or '.join(DATA_SUFFIXES)}."
        raise ValueError(msg)
    if directory and path.exists() and not path.is_dir():
        msg = f"output {os.fspath(path)!r} exists and is not a directory."
        raise FileExistsError(msg)
    taken = path.exists() and (not directory or any(path.iterdir()))
    if taken and not overwrite:
        msg = f"output {os.fspath(path)!r} already exists; pass --overwrite to replace it."
        raise FileExistsError(msg)
    if not directory and path.is_dir():
        msg = f"output {os.fspath(path)!r} is a directory; expected a file name."
        raise IsADirectoryError(msg)
    return path


def read_data(path: Path) -> AnnData | MuData:
    """Read an ``.h5ad`` (AnnData) or ``.h5mu`` (MuData) file into memory."""
    logger.info("reading %s", path)
    check_readable_hdf5(path)
    try:
        if path.suffix.lower() == ".h5mu":
            import mudata

            return mudata.read_h5mu(path)
        import anndata

        return anndata.read_h5ad(path)
    except (OSError, KeyError, TypeError) as e:  # an HDF5 file that is not an AnnData/MuData written by them
        msg = f"{os.fspath(path)} cannot be read as {_FORMATS[path.suffix.lower()]} ({type(e).__name__}: {e})."
        raise ValueError(msg) from e


_FORMATS = {".h5ad": "an AnnData file (.h5ad)", ".h5mu": "a MuData file (.h5mu)"}


def check_readable_hdf5(path: Path) -> None:
    """Refuse a file that is not a complete HDF5 file (truncated, empty, another format), naming it."""
    from scmulan._files import check_hdf5

    check_hdf5(path, what=_FORMATS.get(path.suffix.lower(), "an HDF5 file"), fix="Replace it with a complete copy.")


def write_data(data: AnnData | MuData, path: Path, *, mod: str = "rna") -> None:
    """Write ``data`` to ``path`` through a temporary file, so that a failed run leaves no partial ``OUT``.

    A MuData written to ``.h5ad`` keeps only its modality ``mod``; an AnnData written to ``.h5mu`` becomes the
    modality ``mod`` of a new MuData.
    """
    from scmulan._anndata import get_modality, is_mudata

    to_mudata = path.suffix.lower() == ".h5mu"
    if to_mudata and not is_mudata(data):
        import mudata

        data = mudata.MuData({mod: data})
    elif not to_mudata and is_mudata(data):
        data = get_modality(data, mod)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        with _nullable_strings():  # var['scmulan_gene'] (pp.prepare) is a pandas string array with <NA>
            if to_mudata:
                data.write(partial)
            else:
                data.write_h5ad(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("wrote %s", path)


def _nullable_strings() -> AbstractContextManager:
    """Allow anndata to write pandas string arrays (opt-in since anndata 0.11; a no-op where there is no setting)."""
    import anndata

    if hasattr(anndata.settings, "allow_write_nullable_strings"):
        return anndata.settings.override(allow_write_nullable_strings=True)
    return nullcontext()


# ---------------------------------------------------------------------------------------------- model
def load_model(spec: str, meta_info: str | None = None) -> SCMULAN:
    """The model named by ``--model`` (and ``--meta-info``).

    Accepted: a pretrained name, a directory saved by :meth:`~scmulan.SCMULAN.save`, a directory with the original
    ``ckpt_scMulan.pt`` and ``meta_info.pt``, or an original checkpoint file (its vocabulary from ``meta_info``,
    else the ``meta_info.pt`` next to it).
    """
    path = Path(spec).expanduser()
    logger.info("loading model %s", spec)
    if meta_info is not None or path.is_file():
        from scmulan.model import SCMULAN

        if not path.is_file():
            msg = f"--model {spec!r}: no such checkpoint file (--meta-info needs the original checkpoint as --model)."
            raise FileNotFoundError(msg)
        meta = Path(meta_info).expanduser() if meta_info is not None else path.with_name(LEGACY_META_INFO)
        if not meta.is_file():
            hint = "" if meta_info is not None else "; pass the original vocabulary with --meta-info"
            msg = f"vocabulary file {os.fspath(meta)!r} does not exist{hint}."
            raise FileNotFoundError(msg)
        return SCMULAN.from_legacy_checkpoint(path, meta)
    saved = any((path / name).exists() for name in ("model.json", "model.pt"))  # SCMULAN.save's metadata file
    if path.is_dir() and (path / LEGACY_CHECKPOINT).is_file() and not saved:
        from scmulan.model import load_pretrained

        return load_pretrained(path=path, progressbar=False)
    if not path.exists() and (os.sep in spec or spec.startswith(".")):
        msg = f"--model {spec!r}: no such file or directory."
        raise FileNotFoundError(msg)
    from scmulan.model import resolve_model

    return resolve_model(spec)


def prepare_if_needed(
    data: AnnData | MuData, genes: Any, args: argparse.Namespace, *, layer_without_prepare: bool = False
) -> bool:
    """Run :func:`scmulan.pp.prepare` as ``--prepare`` asks (default: when not prepared yet); whether it ran.

    ``--layer`` only makes sense with the preparation step unless ``layer_without_prepare`` (training can read a
    log-normalised layer directly).
    """
    from scmulan import pp
    from scmulan._anndata import get_modality

    prepare = args.prepare
    if prepare is None:  # --layer / --gene-symbols / --aliases only act through the preparation step: they ask for it
        asked = args.layer is not None or args.gene_symbols is not None or args.aliases is not None
        prepare = asked or "scmulan_prepare" not in get_modality(data, args.mod).uns
    elif not prepare and args.layer is not None and not layer_without_prepare:
        msg = "--layer is used by the preparation step; it cannot be combined with --no-prepare."
        raise ValueError(msg)
    if prepare:
        from ._hints import scanpy_log_in_options

        overlap = {"min_overlap": args.min_overlap} if hasattr(args, "min_overlap") else {}
        with scanpy_log_in_options(getattr(args, "options", {})):  # the gene report's hints as options
            pp.prepare(
                data,
                genes,
                layer=args.layer,
                gene_symbols=args.gene_symbols,
                aliases=args.aliases,
                mod=args.mod,
                **overlap,
            )
    return prepare


@contextmanager
def lightning_logs(verbose: int) -> Iterator[None]:
    """Lightning's INFO banners ("GPU available: …", tips) only with ``-v``.

    Lightning sets its loggers to INFO when it is imported, so this runs after the import, around the training.
    """
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def top_counts(values: Any, n: int = 3) -> str:
    """``"B cell (120), T cell (80), …"``: the ``n`` most frequent values."""
    import pandas as pd

    counts = pd.Series(values).value_counts()
    shown = ", ".join(f"{label} ({count})" for label, count in counts.head(n).items())
    return shown + (", …" if len(counts) > n else "") if shown else "none"
