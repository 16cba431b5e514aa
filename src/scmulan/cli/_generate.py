"""``scmulan generate``: conditional cell generation into a new file (scmulan.tl.generate)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import (
    PROG,
    Formatter,
    add_model_options,
    add_runtime_options,
    check_input,
    check_output,
    load_model,
    positive_int,
    write_data,
)

_EPILOG = f"""\
conditions: --condition FIELD=CATEGORY sets a metadata field of the generated cells; repeat it for other fields
(one condition: organ=Heart and cell_type="Cardiomyocyte cell"). Repeating a field gives one condition per value, other
fields shared: --condition cell_type="B cell" --condition cell_type="NK cell". --conditions-csv reads one
condition per row, one column per field (an empty cell leaves that field out). --n-cells cells are generated per
condition. Unknown fields or categories are an error that lists the valid ones.

writes a new AnnData: obs holds the conditions, n_genes and ended; layers['levels'] the generated levels; X the
levels de-binned to log-normalised values.

examples:
  {PROG} generate -o heart.h5ad --model scmulan-v1 --condition organ=Heart --condition cell_type="Cardiomyocyte cell"
  {PROG} generate -o perturbed.h5ad --model my_model/ --condition cell_type="CD4 T cell" --gene-prompt IL7R=8
  {PROG} generate -o atlas.h5ad --model my_model/ --conditions-csv conditions.csv --n-cells 500 --seed 1
"""


def register(commands: Any, *, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``generate`` to the ``scmulan`` sub-parsers."""
    description = "generate cells conditioned on metadata and optional gene levels (scmulan.tl.generate)"
    parser = commands.add_parser(
        "generate",
        help=description,
        description=description,
        epilog=_EPILOG,
        formatter_class=Formatter,
        parents=parents,
    )
    parser.add_argument("-o", "--output", metavar="OUT", required=True, help="file to write (.h5ad or .h5mu)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_model_options(parser)
    group = parser.add_argument_group("conditions")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--condition",
        action="append",
        type=key_value,
        metavar="FIELD=CATEGORY",
        default=[],
        help="metadata of the generated cells (repeatable)",
    )
    exclusive.add_argument(
        "--conditions-csv",
        metavar="FILE",
        help="CSV (.tsv: tab-separated), one condition per row, one column per field",
    )
    group.add_argument("--n-cells", type=positive_int, default=100, metavar="N", help="cells per condition")
    group.add_argument(
        "--gene-prompt",
        action="append",
        type=gene_level,
        metavar="GENE=LEVEL",
        default=[],
        help="fix a gene's level (1..10) in every cell, 0 forbids it (repeatable)",
    )
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument(
        "--seed", type=int, default=0, metavar="N", help="same seed, batch size and device: same cells"
    )
    sampling.add_argument("--temperature", type=float, default=1.0, metavar="T", help="softmax temperature")
    sampling.add_argument(
        "--gamma",
        type=float,
        default=None,
        metavar="G",
        help="factor on the probability of ending a cell (default: 1 for next-entity models, 0.1 for set/original)",
    )
    sampling.add_argument(
        "--top-k", type=positive_int, default=None, metavar="K", help="sample among the K most likely entities"
    )
    sampling.add_argument(
        "--top-p",
        type=float,
        default=None,
        metavar="P",
        help="sample among the most likely entities up to probability P",
    )
    sampling.add_argument(
        "--guidance",
        type=float,
        default=None,
        metavar="W",
        help="classifier-free guidance towards the conditions (1: none; default: 1.5 for next-entity models given a "
        "condition, 1.75 with a gene bag, else 1)",
    )
    sampling.add_argument(
        "--level-guidance",
        type=float,
        default=1.0,
        metavar="W",
        help="classifier-free guidance of the generated levels (1: none; next-entity models only)",
    )
    sampling.add_argument(
        "--guidance-steps",
        type=int,
        default=None,
        metavar="N",
        help="guide only the first N genes of each cell (default: all)",
    )
    sampling.add_argument(
        "--gene-counts",
        choices=("reference", "model"),
        default=None,
        help="genes per cell drawn from training cells of the condition, or where the model stops (default: "
        "reference when the model recorded them)",
    )
    sampling.add_argument(
        "--redraws",
        type=int,
        default=None,
        metavar="N",
        help="draw a cell again, up to N times, when the model's own annotation does not return its requested cell "
        "type (obs 'type_confirmed'; default: 2 given a cell-type condition and no gene prompt, else 0)",
    )
    sampling.add_argument(
        "--max-length", type=positive_int, default=None, metavar="N", help="longest sentence (default: the model's)"
    )
    add_runtime_options(parser)
    parser.set_defaults(run=run_generate)


def key_value(text: str) -> tuple[str, str]:
    """``FIELD=CATEGORY`` → ``(field, category)`` (argparse ``type``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        msg = f"expected FIELD=CATEGORY, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return key.strip(), value.strip()


def gene_level(text: str) -> tuple[str, int]:
    """``GENE=LEVEL`` → ``(gene, level)`` with an integer level 0..10 (argparse ``type``)."""
    gene, sep, level = (part.strip() for part in text.partition("="))
    if not sep or not gene or not level.isdigit() or int(level) > 10:
        msg = f"expected GENE=LEVEL with an integer level 0..10, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return gene, int(level)


def conditions_from_args(args: argparse.Namespace) -> Any:
    """``{field: category}`` / ``{field: [categories…]}`` from ``--condition``, a DataFrame from the CSV, or None."""
    if args.conditions_csv is not None:
        import pandas as pd

        path = check_input(args.conditions_csv, suffixes=(".csv", ".tsv", ".txt"))
        sep = "," if path.suffix.lower() == ".csv" else "\t"
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
        if table.empty:
            msg = f"--conditions-csv {args.conditions_csv!r} has no rows."
            raise ValueError(msg)
        return table
    if not args.condition:
        return None
    values: dict[str, list[str]] = {}
    for field, category in args.condition:
        values.setdefault(field, []).append(category)
    lengths = {len(v) for v in values.values() if len(v) > 1}
    if len(lengths) > 1:
        msg = "Repeated --condition fields must each be given the same number of times (one condition per value)."
        raise ValueError(msg)
    return {field: v[0] if len(v) == 1 else v for field, v in values.items()}


def run_generate(args: argparse.Namespace) -> str:
    """``scmulan generate``; returns the summary line."""
    from scmulan import tl

    out: Path = check_output(args.output, overwrite=args.overwrite)
    conditions = conditions_from_args(args)
    genes = dict(args.gene_prompt)
    if len(genes) != len(args.gene_prompt):
        msg = "A gene is given twice in --gene-prompt."
        raise ValueError(msg)
    model = load_model(args.model, args.meta_info)
    cells = tl.generate(
        model,
        conditions,
        n_cells=args.n_cells,
        gene_prompts=genes or None,
        temperature=args.temperature,
        gamma=args.gamma,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance=args.guidance,
        level_guidance=args.level_guidance,
        guidance_steps=args.guidance_steps,
        gene_counts=args.gene_counts,
        redraws=args.redraws,
        seed=args.seed,
        max_length=args.max_length,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    write_data(cells, out)
    n_conditions = cells.n_obs // args.n_cells
    return (
        f"generated {cells.n_obs} cells ({n_conditions} condition(s) x {args.n_cells}) -> {out}; "
        f"median {int(cells.obs['n_genes'].median())} genes per cell"
    )
