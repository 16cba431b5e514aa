"""``scmulan train``: prepare → register → build → train → save a new model (scmulan.SCMULAN)."""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

from ._common import (
    PROG,
    Formatter,
    add_input_options,
    check_input,
    check_output,
    check_readable_hdf5,
    epochs_or_auto,
    lightning_logs,
    positive_int,
    prepare_if_needed,
    read_data,
)

logger = logging.getLogger("scmulan.cli")

TASKS = ("generation", "annotation", "metadata")
CONFIGS = ("tiny", "small", "base", "scmulan-v1")
METADATA_FIELDS = ("organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease")

_EPILOG = f"""\
The obs column of each metadata field is named with --FIELD-key; fields without a column are not used. A column may
have missing values: those cells do not train the tasks that need them. Annotation needs --cell-type-key (and
--coarse-cell-type-key for the coarse level); the metadata task needs at least one other field. Without --tasks,
every task the given fields support is trained.

examples:
  {PROG} train reference.h5ad -o my_model/ --config small --epochs 20 \\
      --organ-key tissue --coarse-cell-type-key broad_type --cell-type-key cell_type
  {PROG} train reference.h5ad -o my_model/ --cell-type-key cell_type --tasks generation annotation \\
      --accelerator gpu --devices 4 --strategy ddp --checkpoint-dir ckpts/ --checkpoint-every 1000
  {PROG} train shard0.h5ad -o atlas_model/ --corpus shard1.h5ad shard2.h5ad --organ-key organ --cell-type-key ct
"""


def register(commands: Any, *, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``train`` to the ``scmulan`` sub-parsers."""
    description = "train a new scMulan model on annotated cells and save it (scmulan.SCMULAN)"
    parser = commands.add_parser(
        "train", help=description, description=description, epilog=_EPILOG, formatter_class=Formatter, parents=parents
    )
    add_input_options(
        parser,
        what="training cells (counts or log-normalised)",
        output="model directory to write (SCMULAN.save)",
        match_genes=False,
    )
    keys = parser.add_argument_group("metadata columns (obs keys)")
    for field in METADATA_FIELDS:
        flag = "--" + field.replace("_", "-") + "-key"
        keys.add_argument(flag, default=None, metavar="COLUMN", help=f"obs column with the {field.replace('_', ' ')}")
    keys.add_argument(
        "--extra-metadata-keys", nargs="+", default=None, metavar="COLUMN", help="further categorical obs columns"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--config", choices=CONFIGS, default="small", help="network size")
    model.add_argument(
        "--max-length",
        type=positive_int,
        default=1550,
        metavar="N",
        help="longest sentence (cells keep their top genes)",
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "--epochs",
        type=epochs_or_auto,
        default="auto",
        metavar="N",
        help="passes over the training cells; 'auto': enough for 750 optimiser steps, at least 10 (default: auto)",
    )
    training.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=None,
        metavar="TASK",
        help=f"tasks to train, among {', '.join(TASKS)} (default: all that the given fields support)",
    )
    training.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="N", help="sentences per batch (per device)"
    )
    training.add_argument(
        "--lr", type=float, default=None, metavar="LR", help="peak learning rate (AdamW; default: by model width)"
    )
    training.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the initial weights, the data split and the run"
    )
    training.add_argument(
        "--corpus", nargs="+", default=None, metavar="SHARD", help="further .h5ad shards streamed from disk"
    )
    training.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="directory of training checkpoints")
    training.add_argument(
        "--checkpoint-every", type=positive_int, default=None, metavar="N", help="checkpoint every N steps"
    )
    training.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="resume from the last checkpoint in --checkpoint-dir",
    )
    hardware = parser.add_argument_group("hardware (Lightning)")
    hardware.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, mps, …")
    hardware.add_argument("--devices", type=devices, default="auto", help="auto, a count (4) or a list (0,1)")
    hardware.add_argument(
        "--strategy",
        default="auto",
        help="auto, ddp (one process per device), fsdp (parameters sharded over the devices, one unit per block), …",
    )
    hardware.add_argument("--precision", default="auto", help="auto (bf16 mixed on GPUs), 32-true, bf16-mixed, …")
    parser.set_defaults(run=run_train)


def devices(text: str) -> int | str | list[int]:
    """``auto`` / ``4`` / ``0,1`` (argparse ``type`` of ``--devices``)."""
    try:
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        return int(text)
    except ValueError:
        if text.strip() and text.replace(",", "").strip().isidentifier():
            return text.strip()
        msg = f"expected auto, a device count or a comma-separated list of device indices, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def run_train(args: argparse.Namespace) -> str:
    """``scmulan train``; returns the summary line."""
    from scmulan._anndata import get_modality

    source = check_input(args.input)
    out = check_output(args.output, overwrite=args.overwrite, directory=True)
    for shard in args.corpus or []:
        check_readable_hdf5(check_input(shard, suffixes=(".h5ad",)))
    if args.checkpoint_every is not None and args.checkpoint_dir is None:
        msg = "--checkpoint-every needs --checkpoint-dir."
        raise ValueError(msg)
    adata = get_modality(read_data(source), args.mod)
    prepared = prepare_if_needed(adata, None, args, layer_without_prepare=True)

    from scmulan.model import SCMULAN  # torch, Lightning and scvi-tools from here on

    keys = {f"{field}_key": getattr(args, f"{field}_key") for field in METADATA_FIELDS}
    SCMULAN.setup_anndata(
        adata,
        layer=None if prepared else args.layer,
        gene_symbols_key=args.gene_symbols,
        extra_metadata_keys=args.extra_metadata_keys,
        **keys,
    )
    model = SCMULAN(adata, config=args.config, max_length=args.max_length, seed=args.seed)
    logger.info("%s", model._model_summary_string)
    with lightning_logs(args.verbose):
        model.train(
            max_epochs=args.epochs,
            tasks=args.tasks,
            batch_size=args.batch_size,
            lr=args.lr,
            corpus=args.corpus,
            accelerator=args.accelerator,
            devices=args.devices,
            strategy=args.strategy,
            precision=args.precision,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every_n_steps=args.checkpoint_every,
            resume=args.resume,
            seed=args.seed,
            enable_progress_bar=not args.quiet,
        )
    if _global_rank() != 0:  # the other processes of a ddp/fsdp run hold the same weights: one saves and reports
        return ""
    model.save(out, overwrite=args.overwrite)
    shown = ""
    for name in ("validation_loss", "train_loss"):
        loss = _last(model.history_, name)
        if loss is not None:
            shown = f"; final {name} {loss:.4g}"
            break
    epochs = f"{args.epochs} epoch(s)" if args.epochs != "auto" else "the default number of epochs"
    return (
        f"trained SCMULAN ({args.config}, {model.module.num_parameters():,} parameters) on {adata.n_obs} cells "
        f"for {epochs}, tasks {', '.join(args.tasks or model.trained_tasks_)} -> {out}{shown}"
    )


def _global_rank() -> int:
    """The global rank of this process in a distributed run (0 outside one and in the main process of ddp_spawn)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _last(history: dict | None, prefix: str) -> float | None:
    """The last finite value logged under ``prefix`` (epoch-level first)."""
    for name in (f"{prefix}_epoch", prefix, f"{prefix}_step"):
        frame = (history or {}).get(name)
        if frame is None or frame.empty:
            continue
        values = [float(v) for v in frame.iloc[:, -1].tolist() if v == v and not math.isinf(float(v))]
        if values:
            return values[-1]
    return None
