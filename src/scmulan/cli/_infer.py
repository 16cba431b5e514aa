"""``scmulan annotate``, ``scmulan embed`` and ``scmulan predict-metadata``: one ``tl`` function each, IN → OUT."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._common import (
    PROG,
    Formatter,
    add_input_options,
    add_model_options,
    add_runtime_options,
    check_input,
    check_output,
    load_model,
    prepare_if_needed,
    read_data,
    top_counts,
    write_data,
)

if TYPE_CHECKING:
    from anndata import AnnData

    from scmulan.model import SCMULAN


def register(commands: Any, *, parents: list[argparse.ArgumentParser]) -> None:
    """Add the three inference commands to the ``scmulan`` sub-parsers."""
    _register_annotate(commands, parents)
    _register_embed(commands, parents)
    _register_predict_metadata(commands, parents)


def _inference_parser(commands: Any, name: str, parents: list, *, help: str, epilog: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=help, description=help, epilog=epilog, formatter_class=Formatter, parents=parents
    )
    add_input_options(parser)
    add_model_options(parser)
    add_runtime_options(parser)
    return parser


def _run_inference(args: argparse.Namespace, compute: Callable[[Any, SCMULAN], None]) -> tuple[AnnData, str]:
    """Check paths, read, load the model, prepare, ``compute``, write: the modality written and OUT."""
    from scmulan._anndata import get_modality

    source = check_input(args.input)
    out = check_output(args.output, overwrite=args.overwrite)
    data = read_data(source)
    get_modality(data, args.mod)  # an unknown modality fails before the model is loaded
    model = load_model(args.model, args.meta_info)
    prepare_if_needed(data, model, args)
    compute(data, model)
    write_data(data, out, mod=args.mod)
    return get_modality(data, args.mod), str(out)


# ---------------------------------------------------------------------------------------------- annotate
def _register_annotate(commands: Any, parents: list) -> None:
    parser = _inference_parser(
        commands,
        "annotate",
        parents,
        help="annotate cells with coarse and fine cell types (scmulan.tl.annotate)",
        epilog=f"""\
writes obs['{{key}}_coarse'], obs['{{key}}_fine'], obs['{{key}}_confidence'] and obsm['X_{{key}}'].

examples:
  {PROG} annotate cells.h5ad -o annotated.h5ad --model scmulan-v1
  {PROG} annotate counts.h5ad -o annotated.h5ad --model my_model/ --device cuda --batch-size 256
  {PROG} annotate multiome.h5mu -o annotated.h5mu --mod rna --model scmulan-v1
  {PROG} annotate cells.h5ad -o out.h5ad --model ckpt_scMulan.pt --meta-info meta_info.pt --legacy
""",
    )
    group = parser.add_argument_group("annotation")
    group.add_argument(
        "--key-added", default="scmulan", help="name of the result: obs['<name>_…'] and uns['<name>'] are written"
    )
    group.add_argument(
        "--constrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="step 1 may only emit coarse types, step 2 only fine types",
    )
    group.add_argument("--legacy", action="store_true", help="decode exactly as the original scMulan")
    group.add_argument("--exclude-unclassified", action="store_true", help="never predict 'Unclassified'")
    group.add_argument(
        "--use-metadata",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the model the metadata columns (organ, …) the cells have",
    )
    parser.set_defaults(run=run_annotate)


def run_annotate(args: argparse.Namespace) -> str:
    """``scmulan annotate``; returns the summary line."""
    from scmulan import tl

    def compute(data: Any, model: SCMULAN) -> None:
        tl.annotate(
            data,
            model,
            key_added=args.key_added,
            constrained=args.constrained,
            legacy=args.legacy,
            exclude_unclassified=args.exclude_unclassified,
            use_metadata=args.use_metadata,
            batch_size=args.batch_size,
            device=args.device,
            mod=args.mod,
            progress=not args.quiet,
        )

    adata, out = _run_inference(args, compute)
    fine = adata.obs[f"{args.key_added}_fine"]
    return f"annotated {adata.n_obs} cells -> {out}; top {args.key_added}_fine: {top_counts(fine)}"


# ---------------------------------------------------------------------------------------------- embed
def _register_embed(commands: Any, parents: list) -> None:
    parser = _inference_parser(
        commands,
        "embed",
        parents,
        help="embed cells with the model's hidden states (scmulan.tl.embed)",
        epilog=f"""\
writes obsm[X_KEY_ADDED] (cells × model width), e.g. for neighbours and UMAP, and uns[KEY_ADDED].

examples:
  {PROG} embed cells.h5ad -o embedded.h5ad --model scmulan-v1
  {PROG} embed cells.h5ad -o embedded.h5ad --model my_model/ --pooling mean --key-added mean
""",
    )
    group = parser.add_argument_group("embedding")
    group.add_argument(
        "--pooling",
        choices=("annotation", "mean"),
        default="annotation",
        help="annotation: hidden state at the first decoded cell type (the original X_scMulan); "
        "mean: mean over gene positions (label-free)",
    )
    group.add_argument(
        "--key-added", default="scmulan", help="name of the result: obsm['X_<name>'] and uns['<name>'] are written"
    )
    group.add_argument("--legacy", action="store_true", help="with annotation pooling, decode as the original")
    parser.set_defaults(run=run_embed)


def run_embed(args: argparse.Namespace) -> str:
    """``scmulan embed``; returns the summary line."""
    from scmulan import tl

    def compute(data: Any, model: SCMULAN) -> None:
        tl.embed(
            data,
            model,
            pooling=args.pooling,
            key_added=args.key_added,
            legacy=args.legacy,
            batch_size=args.batch_size,
            device=args.device,
            mod=args.mod,
            progress=not args.quiet,
        )

    adata, out = _run_inference(args, compute)
    key = f"X_{args.key_added.removeprefix('X_')}"  # an obsm key is the deprecated spelling (tl.embed warns)
    n_obs, width = adata.obsm[key].shape
    return f"embedded {n_obs} cells -> {out}; obsm['{key}']: {n_obs} x {width} ({args.pooling} pooling)"


# ---------------------------------------------------------------------------------------------- predict-metadata
def _register_predict_metadata(commands: Any, parents: list) -> None:
    parser = _inference_parser(
        commands,
        "predict-metadata",
        parents,
        help="predict metadata such as organ and region (scmulan.tl.predict_metadata)",
        epilog=f"""\
writes obs['{{key}}_{{field}}'] and obs['{{key}}_{{field}}_confidence'] for every field.

examples:
  {PROG} predict-metadata cells.h5ad -o meta.h5ad --model scmulan-v1
  {PROG} predict-metadata cells.h5ad -o meta.h5ad --model my_model/ --fields organ region sex
""",
    )
    group = parser.add_argument_group("metadata")
    group.add_argument(
        "--fields", nargs="+", metavar="FIELD", default=None, help="fields to predict (default: all the model can)"
    )
    group.add_argument(
        "--key-added", default="scmulan", help="name of the result: obs['<name>_…'] and uns['<name>'] are written"
    )
    group.add_argument(
        "--use-metadata",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the model the other metadata columns the cells have",
    )
    parser.set_defaults(run=run_predict_metadata)


def run_predict_metadata(args: argparse.Namespace) -> str:
    """``scmulan predict-metadata``; returns the summary line."""
    from scmulan import tl

    fields: list[str] = []

    def compute(data: Any, model: SCMULAN) -> None:
        fields.extend(args.fields or model.metadata_fields_)
        if not fields:
            msg = "The model predicts no metadata fields (it was trained without the metadata task)."
            raise ValueError(msg)
        tl.predict_metadata(
            data,
            model,
            fields,
            key_added=args.key_added,
            use_metadata=args.use_metadata,
            batch_size=args.batch_size,
            device=args.device,
            mod=args.mod,
            progress=not args.quiet,
        )

    adata, out = _run_inference(args, compute)
    tops = "; ".join(f"{f}: {top_counts(adata.obs[f'{args.key_added}_{f}'], n=2)}" for f in fields)
    return f"predicted {', '.join(fields)} for {adata.n_obs} cells -> {out}; {tops}"
