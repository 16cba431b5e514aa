"""Cells to read sentences from: an in-memory or backed AnnData, or an ``.h5ad`` file (a corpus shard)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from scmulan._warnings import warn

from ._genes import gene_token_ids
from ._normalize import normalize_log1p

if TYPE_CHECKING:
    from anndata import AnnData

    from scmulan.vocab import Vocabulary

logger = logging.getLogger(__name__)


def normalize_rows(X: sparse.spmatrix | sparse.sparray | np.ndarray, target_sum: float = 1e4) -> sparse.csr_matrix:
    """``normalize_total(target_sum)`` + ``log1p`` of a chunk of raw counts, as a new float32 CSR matrix.

    The same kernel as :func:`scmulan.pp.prepare` (float64 row sums and scaling, then float32), so a raw-count
    shard normalised chunk by chunk gives exactly the values, hence the levels, of the same cells prepared
    beforehand. Cells with no counts stay empty.

    Parameters
    ----------
    X
        Non-negative counts, cells x genes (CSR preferred; other sparse formats and dense chunks are converted).
    target_sum
        Total of each cell after scaling.

    Returns
    -------
    The log-normalised rows (``X`` is not modified).
    """
    return sparse.csr_matrix(normalize_log1p(sparse.csr_matrix(X), target_sum=target_sum))


def encode_metadata(obs: pd.DataFrame, vocab: Vocabulary, obs_keys: Mapping[str, str]) -> np.ndarray:
    """Token ids ``(n_obs, len(obs_keys))`` of the metadata columns, ``-1`` for missing or unknown values.

    Parameters
    ----------
    obs
        The cells' annotations.
    vocab
        The model's vocabulary.
    obs_keys
        Metadata field -> ``obs`` column, in the column order of the result.
    """
    out = np.full((len(obs), len(obs_keys)), -1, dtype=np.int64)
    for j, (field, key) in enumerate(obs_keys.items()):
        if key not in obs:
            msg = f"`obs[{key!r}]` (the {field!r} field) is missing; `obs` has {list(obs.columns)[:20]}."
            raise ValueError(msg)
        col = obs[key]
        codes = pd.Categorical(col.astype("string") if not isinstance(col.dtype, pd.CategoricalDtype) else col)
        categories = [str(c) for c in codes.categories]
        lookup = (
            vocab.token_ids(field, categories, missing=-1) if field in vocab.fields else np.full(len(categories), -1)
        )
        lookup = np.append(np.asarray(lookup, dtype=np.int64), -1)  # code -1 (NaN) -> -1
        out[:, j] = lookup[codes.codes]
        unknown = [c for c, t in zip(categories, lookup[:-1], strict=True) if t < 0]
        if unknown:
            n_cells = int(np.isin(codes.codes, [categories.index(c) for c in unknown]).sum())
            warn(
                f"{n_cells} cells have {field!r} values the model does not know ({unknown[:5]}"
                f"{'…' if len(unknown) > 5 else ''}); they are treated as unknown.",
                UserWarning,
            )
    return out


class CellSource:
    """Rows of one AnnData (in memory or ``backed="r"``) or one ``.h5ad`` file, read in chunks.

    Parameters
    ----------
    data
        An AnnData, or the path of an ``.h5ad`` file (opened ``backed="r"`` when first read, in each worker). A
        backed AnnData sent to a DataLoader worker (spawn or forkserver) reopens its file there; its token ids and
        metadata are computed from the in-memory ``var`` and ``obs`` before it goes.
    vocab
        The model's vocabulary (gene and metadata token ids).
    obs_keys
        Metadata field -> ``obs`` column to read (known values enter sentences as metadata tokens).
    layer
        Layer with the log-normalised expression (``None``: ``X``). Only ``X`` of a backed AnnData or file stays on
        disk; a layer is read from memory (AnnData loads layers when it opens a file ``backed="r"``).
    gene_symbols
        ``var`` column with gene identifiers (see :func:`~scmulan.sentence.gene_token_ids`).
    normalize
        Apply ``normalize_total(1e4)`` + ``log1p`` to every chunk (for sources holding raw counts).
    """

    fork_safe = True  # readable in a forked DataLoader worker (a SOMA source is not)

    def __init__(
        self,
        data: AnnData | str | os.PathLike,
        vocab: Vocabulary,
        *,
        obs_keys: Mapping[str, str] | None = None,
        layer: str | None = None,
        gene_symbols: str | None = None,
        normalize: bool = False,
    ) -> None:
        self.path = None if hasattr(data, "obs") else os.fspath(data)
        self._adata = data if self.path is None else None
        self.vocab = vocab
        self.obs_keys = dict(obs_keys or {})
        self.layer = layer
        self.gene_symbols = gene_symbols
        self.normalize = normalize
        self._col_token: np.ndarray | None = None
        self._metadata: np.ndarray | None = None
        self._backed: tuple | None = None  # (file, rows, columns) of a backed AnnData, set when sent to a worker
        self._layer_matrix = None  # the layer of a backed AnnData, when sent to a worker
        if self.path is not None:
            import anndata as ad

            from scmulan._files import check_hdf5

            check_hdf5(self.path, what="a corpus shard (.h5ad)")  # empty/truncated: a message naming the shard
            backed = ad.read_h5ad(self.path, backed="r")
            self.n_obs = backed.n_obs
            backed.file.close()
        else:
            self.n_obs = data.n_obs
        if self.n_obs == 0:
            msg = f"{self.path or 'The AnnData'} has no cells; remove empty shards from the corpus."
            raise ValueError(msg)

    def _open(self) -> AnnData:
        if self._adata is None:
            import anndata as ad

            if self._backed is not None:  # a backed AnnData sent to a worker process: reopen its file
                filename, obs_index, var_index = self._backed
                self._adata = ad.read_h5ad(filename, backed="r")
                if obs_index is not None:  # it was a view: the same rows and columns
                    self._adata = self._adata[obs_index, var_index]
            else:
                self._adata = ad.read_h5ad(self.path, backed="r")
        if self._col_token is None:
            self._col_token = gene_token_ids(self._adata, self.vocab, gene_symbols=self.gene_symbols)
            self._metadata = encode_metadata(self._adata.obs, self.vocab, self.obs_keys)
            if not (self._col_token >= 0).any():
                names = list(self._adata.var_names[:3])
                msg = (
                    f"{self.path or 'The AnnData'} shares no gene with the model's vocabulary (e.g. model genes "
                    f"{self.vocab.genes[:3]}, data genes {names}). Run `scmulan.pp.prepare(adata, model)` to match "
                    "gene names (symbols, Ensembl IDs, aliases), or pass the `var` column that holds the symbols."
                )
                raise ValueError(msg)
        return self._adata

    def __getstate__(self) -> dict:
        # h5py file handles cannot be pickled, so DataLoader workers started with spawn or forkserver cannot receive
        # a backed AnnData: send the file name instead and reopen it in the worker (see `_open`).
        backed = self.path is None and self._backed is None and getattr(self._adata, "isbacked", False)
        if backed:
            self._open()  # token ids and metadata from the in-memory `var` and `obs`, which the file may lack
        state = self.__dict__.copy()
        if self.path is not None or self._backed is not None:  # reopened where it arrives
            state["_adata"] = None
        elif backed:
            adata = self._adata
            view = adata.is_view
            state["_adata"] = None
            state["_backed"] = (os.fspath(adata.filename), adata._oidx if view else None, adata._vidx if view else None)
            if self.layer is not None:  # layers of a backed AnnData live in memory: send this one along
                layer = adata.layers[self.layer]
                state["_layer_matrix"] = sparse.csr_matrix(layer) if sparse.issparse(layer) else np.array(layer)
        return state

    def _matrix(self, adata: AnnData):
        if self._layer_matrix is not None:
            return self._layer_matrix
        return adata.X if self.layer is None else adata.layers[self.layer]

    @property
    def col_token(self) -> np.ndarray:
        """Token id of every column (``-1``: not a model gene)."""
        self._open()
        return self._col_token

    @property
    def n_model_genes(self) -> int:
        """How many model genes the data have (raises, naming the fix, when there are none)."""
        return int((self.col_token >= 0).sum())

    @property
    def obs_names(self) -> pd.Index:
        """The cells' names, in row order (the index of inference results)."""
        return self._open().obs_names.copy()

    @property
    def metadata(self) -> np.ndarray:
        """Metadata token ids ``(n_obs, len(obs_keys))``."""
        self._open()
        return self._metadata

    def read(self, rows: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
        """Expression (CSR, float32, log-normalised) and metadata ids of ``rows`` (in the given order)."""
        adata = self._open()
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        matrix = self._matrix(adata)
        if len(sorted_rows) and sorted_rows[-1] - sorted_rows[0] + 1 == len(sorted_rows):
            X = matrix[int(sorted_rows[0]) : int(sorted_rows[-1]) + 1]  # contiguous: one slice read
        else:
            X = matrix[sorted_rows]
        X = sparse.csr_matrix(X)
        X = X[np.argsort(order, kind="stable")]  # back to the requested order
        if self.normalize:
            X = normalize_rows(X)
        return X.astype(np.float32, copy=False), self.metadata[rows]

    def iter_chunks(self, chunk_size: int) -> Iterator[tuple[np.ndarray, sparse.csr_matrix, np.ndarray]]:
        """All rows in order, ``chunk_size`` at a time: ``(rows, X, metadata)``."""
        for start in range(0, self.n_obs, chunk_size):
            rows = np.arange(start, min(start + chunk_size, self.n_obs))
            X, meta = self.read(rows)
            yield rows, X, meta
