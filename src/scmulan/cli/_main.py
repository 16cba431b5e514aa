"""The ``scmulan`` parser, the logging set-up and the exit-code policy.

Exit codes: 0 success; 2 usage errors (argparse); 1 data or model errors (``ValueError``, ``KeyError``,
``OSError``, ``FloatingPointError`` (a non-finite training loss) and ``pickle.UnpicklingError`` (a vocabulary
file that is not plain containers) raised by the library or by the command's own checks), printed as
``error: <message>`` on stderr, with the traceback only at ``-vv``; 130 when interrupted. The library's messages
name its parameters as Python keywords; errors and warnings are printed with those of the running command rewritten
as its options (`` `gene_symbols=` `` → ``--gene-symbols``, see :mod:`scmulan.cli._hints`).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from . import _generate, _infer, _train
from ._common import PROG, Formatter
from ._hints import option_table, render_hints

_EPILOG = f"""\
examples:
  {PROG} annotate cells.h5ad -o annotated.h5ad --model scmulan-v1
  {PROG} embed cells.h5ad -o embedded.h5ad --model my_model/ --pooling mean
  {PROG} predict-metadata cells.h5ad -o meta.h5ad --model scmulan-v1 --fields organ region
  {PROG} generate -o heart.h5ad --model scmulan-v1 --condition organ=Heart --n-cells 100
  {PROG} train reference.h5ad -o my_model/ --config small --cell-type-key cell_type --epochs 10

Run '{PROG} COMMAND --help' for the options of a command.
exit codes: 0 success, 1 data or model error (message on stderr), 2 usage error.
"""


def _verbosity_options(*, suppress: bool) -> argparse.ArgumentParser:
    """``-v``/``--quiet`` as a parent parser, so they are accepted before and after the command.

    The commands' copies default to ``SUPPRESS``, so that they do not reset what was given before the command.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    verbose, quiet = (argparse.SUPPRESS, argparse.SUPPRESS) if suppress else (0, False)
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=verbose,
        help="log progress (INFO) on stderr; -vv: DEBUG and tracebacks on errors",
    )
    group.add_argument("-q", "--quiet", action="store_true", default=quiet, help="no progress bars")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``scmulan`` argument parser (one sub-command per task)."""
    from scmulan._version import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="scMulan from the command line: annotate, embed, generate cells and train models.",
        epilog=_EPILOG,
        formatter_class=Formatter,
        parents=[_verbosity_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _verbosity_options(suppress=True)
    for module in (_infer, _generate, _train):
        module.register(commands, parents=[common])
    for sub in commands.choices.values():  # the library's hints are printed as these options (see _hints)
        sub.set_defaults(options=option_table(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``scmulan`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name; ``None`` uses ``sys.argv[1:]``.

    Returns
    -------
    The exit code: 0 success, 1 data or model error, 2 usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    restore = _configure_logging(args.verbose)
    options = getattr(args, "options", {})
    try:
        with warnings.catch_warnings():
            if args.verbose < 2:
                _compact_warnings(quiet_third_party=args.verbose == 0, options=options)
            summary = args.run(args)
    except (ValueError, KeyError, OSError, FloatingPointError, pickle.UnpicklingError) as exc:
        if args.verbose >= 2:
            traceback.print_exc(file=sys.stderr)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {render_hints(str(message), options)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        restore()
    if summary:
        print(summary)
    return 0


def _configure_logging(verbose: int) -> Callable[[], None]:
    """Send the ``scmulan`` logger to stderr at the requested level; returns a function that undoes it."""
    package = logging.getLogger("scmulan")
    level = package.level
    handler = logging.StreamHandler(sys.stderr)
    if verbose >= 2:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    package.addHandler(handler)

    def restore() -> None:
        package.removeHandler(handler)
        package.setLevel(level)

    return restore


def _compact_warnings(*, quiet_third_party: bool, options: dict[str, argparse.Action]) -> None:
    """Show warnings as one ``warning: …`` line (inside ``warnings.catch_warnings``, which restores the default).

    The library's hints are rewritten as the command's options (:func:`~scmulan.cli._hints.render_hints`).
    """

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {render_hints(str(message), options)}", file=sys.stderr if file is None else file)

    warnings.showwarning = show
    if quiet_third_party:
        # Lightning's advice on data loaders and log intervals concerns its own set-up, not the user's data
        warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"From 0\.4 \.update\(\)", category=FutureWarning)  # mudata
