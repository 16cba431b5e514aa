"""Corpus items -> sources: AnnData and ``.h5ad`` files, TileDB-SOMA queries and annbatch collections."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._annbatch import AnnbatchSource, is_annbatch
from ._soma import SomaSource, is_soma
from ._sources import CellSource

if TYPE_CHECKING:
    from anndata import AnnData

    from scmulan.vocab import Vocabulary


def as_sources(
    data: AnnData | str | os.PathLike | Any | Sequence[Any], vocab: Vocabulary, **kwargs
) -> list[CellSource]:
    """One source per item: a :class:`~scmulan.sentence.CellSource`, ``SomaSource`` or ``AnnbatchSource``.

    Parameters
    ----------
    data
        An AnnData (in memory or ``backed="r"``), the path of an ``.h5ad`` file, a TileDB-SOMA
        ``ExperimentAxisQuery``, ``Experiment`` or experiment URI, an annbatch collection (its path, zarr group
        or ``DatasetCollection``), or a list of them (a corpus). Sources built already (a :class:`CellSource`,
        :class:`~scmulan.sentence.SomaSource` or :class:`~scmulan.sentence.AnnbatchSource`) are kept as they are.
    vocab
        The model's vocabulary.
    **kwargs
        Passed to every source (``obs_keys``, ``layer``, ``gene_symbols``, ``normalize``).

    Returns
    -------
    The sources, in the order given.
    """

    def source(item) -> CellSource:
        if isinstance(item, CellSource):
            return item
        kind = AnnbatchSource if is_annbatch(item) else SomaSource if is_soma(item) else CellSource
        return kind(item, vocab, **kwargs)

    one = hasattr(data, "obs") or isinstance(data, str | os.PathLike | CellSource) or is_annbatch(data)
    items = [data] if one else list(data)
    if not items:
        msg = "No data given: pass an AnnData, an .h5ad path, a SOMA query, an annbatch collection or a list of them."
        raise ValueError(msg)
    return [source(item) for item in items]
