"""The library's hints in the command line's own terms: `` `gene_symbols='symbol'` `` becomes ``--gene-symbols symbol``.

The library names a parameter in its messages one way: in backticks, as a Python keyword, alone or with a value
(`` `min_overlap` ``, `` `aliases=` ``, `` `gene_symbols='symbol'` ``, `` `overwrite=True` ``). The command line
prints every error and warning through :func:`render_hints`, which rewrites those whose keyword is an option of the
running command into that option, using the command's own parser (so a renamed or new option needs nothing here).
Keywords the command has no option for stay as they are.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

# Python keywords whose CLI option has another name (``dest``)
KEYWORD_TO_DEST = {
    "max_epochs": "epochs",
    "gene_symbols_key": "gene_symbols",
    "checkpoint_every_n_steps": "checkpoint_every",
    "meta_info_path": "meta_info",
}
_KEYWORD = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)(?:=([^`]*))?`")


def option_table(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The optional arguments of ``parser`` by ``dest`` (what :func:`render_hints` needs)."""
    return {action.dest: action for action in parser._actions if action.option_strings}


def render_hints(text: str, options: dict[str, argparse.Action]) -> str:
    """``text`` with each backticked Python keyword that ``options`` has rewritten as the option.

    Parameters
    ----------
    text
        An error or warning message of the library.
    options
        The running command's options by ``dest`` (:func:`option_table`).

    Examples
    --------
    ``"pass `gene_symbols='symbol'`, or lower `min_overlap`"`` → ``"pass --gene-symbols symbol, or lower
    --min-overlap"``.
    """

    def option(match: re.Match[str]) -> str:
        keyword, value = match.group(1), match.group(2)
        action = options.get(KEYWORD_TO_DEST.get(keyword, keyword))
        if action is None:
            return match.group(0)
        long = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
        value = (value or "").strip()
        if isinstance(action, argparse.BooleanOptionalAction):
            return long.replace("--", "--no-", 1) if value == "False" else long
        if action.nargs == 0 or not value:  # a switch, or the option named without a value
            return long
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if value.startswith("[") and value.endswith("]"):  # a list: the values one after the other
            value = " ".join(v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip())
        return f"{long} {value}"

    return _KEYWORD.sub(option, text)


class _HintWriter:
    """A text stream that writes to ``target`` with :func:`render_hints` applied."""

    def __init__(self, target: TextIO, options: dict[str, argparse.Action]) -> None:
        self.target, self.options = target, options

    def write(self, text: str) -> int:
        return self.target.write(render_hints(text, self.options))

    def flush(self) -> None:
        self.target.flush()


@contextmanager
def scanpy_log_in_options(options: dict[str, argparse.Action]) -> Iterator[None]:
    """Within the block, what is printed to Scanpy's log (``pp.prepare``'s gene report) names the options too."""
    import scanpy as sc

    previous = sc.settings.logfile
    sc.settings.logfile = _HintWriter(previous, options)
    try:
        yield
    finally:
        sc.settings.logfile = previous
