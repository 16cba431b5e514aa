"""Shared plumbing of the ``pl`` functions: new axes, saving, showing and what to return.

matplotlib is imported inside the functions, so that ``import scmulan`` does not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from scmulan._logging import logger

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

F = TypeVar("F", bound=Callable)

#: File extensions that ``save`` recognises as the figure format.
FIGURE_EXTENSIONS = (".png", ".pdf", ".svg")

DOC_SHOW_SAVE = """\
show
        Show the plot. `None` follows ``scanpy.settings.autoshow``.
    save
        Write the figure to a file. `True` writes ``<figdir>/<name>.<file_format_figs>``, where ``<name>``
        is the function's name and ``figdir`` and ``file_format_figs`` are :obj:`scanpy.settings`, as Scanpy
        does. A string without a folder is a suffix, as in Scanpy: ``save="_pbmc.pdf"`` writes
        ``<figdir>/<name>_pbmc.pdf``. A path with a folder (``"results/fig.png"``) or a :class:`~pathlib.Path`
        is written exactly there; its extension (``.png``, ``.pdf`` or ``.svg``) gives the format.
    return_fig
        Return the :class:`~matplotlib.figure.Figure` instead of the Axes."""

DOC_SHOW_SAVE_AX = (
    """\
ax
        A matplotlib Axes to draw into. A new figure is made when `None`.
    """
    + DOC_SHOW_SAVE
)

DOC_RETURNS = """\
`None` if the plot was shown; the :class:`~matplotlib.figure.Figure` if `return_fig=True`;
    otherwise the :class:`~matplotlib.axes.Axes`."""


def doc_params(**snippets: str) -> Callable[[F], F]:
    """Replace ``{name}`` placeholders in a docstring with shared snippets (other braces are kept)."""

    def decorate(fn: F) -> F:
        doc = fn.__doc__ or ""
        for name, text in snippets.items():
            doc = doc.replace("{" + name + "}", text)
        fn.__doc__ = doc
        return fn

    return decorate


def new_axes(ax: Axes | None, figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes, bool]:
    """The figure and Axes to draw into, and whether the figure was made here."""
    if ax is not None:
        return ax.figure, ax, False
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax, True


def figure_path(writekey: str, save: bool | str | PathLike) -> Path:
    """Where ``save`` writes the figure (see the ``save`` parameter of the ``pl`` functions)."""
    import scanpy as sc

    if isinstance(save, PathLike) or (isinstance(save, str) and Path(save).parent != Path(".")):
        path = Path(save)
        if path.suffix.lower() not in FIGURE_EXTENSIONS:
            path = path.with_name(f"{path.name}.{sc.settings.file_format_figs}")
        return path
    suffix = save if isinstance(save, str) else ""
    ext = sc.settings.file_format_figs
    for candidate in FIGURE_EXTENSIONS:
        if suffix.lower().endswith(candidate):
            suffix, ext = suffix[: -len(candidate)], candidate[1:]
            break
    return Path(sc.settings.figdir) / f"{writekey}{suffix}{sc.settings.plot_suffix}.{ext}"


def finish(
    fig: Figure,
    axes: Axes | Sequence[Axes],
    *,
    writekey: str,
    show: bool | None,
    save: bool | str | PathLike | None,
    return_fig: bool,
    owns_figure: bool = True,
) -> Figure | Axes | list[Axes] | None:
    """Save and/or show the figure, then return what the Scanpy conventions ask for.

    A figure made by the ``pl`` function is closed after saving (as Scanpy does); one the user passed
    through ``ax`` is left open.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    save = sc.settings.autosave if save is None else save
    show = sc.settings.autoshow if show is None else show
    if save:
        path = figure_path(writekey, save)
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("saving figure to file %s", path)
        fig.savefig(path, bbox_inches="tight")
    if show:
        plt.show()
        return None
    if save and owns_figure:
        plt.close(fig)
    if return_fig:
        return fig
    return list(axes) if isinstance(axes, Sequence) else axes
