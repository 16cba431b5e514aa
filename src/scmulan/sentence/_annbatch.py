"""Cells of an annbatch collection, streamed chunk by chunk without loading the matrix.

An annbatch collection (``annbatch.DatasetCollection(...).add_adatas(...)``) is a zarr group whose children
``dataset_0``, ``dataset_1``, ... are AnnData stores over one shared ``var`` space, with cells pre-shuffled across
them and the arrays sharded for chunked random access. :class:`AnnbatchSource` reads that layout with AnnData's own
zarr reader (``anndata.io.sparse_dataset``): row ``i`` is the ``i``-th cell of the datasets in order, so
:class:`~scmulan.sentence.TrainingSentenceDataset` plans, shards over ranks and workers and resumes it as it does an
``.h5ad`` shard. The ``annbatch`` package itself (Python >= 3.12) is needed only to write a collection.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from ._genes import gene_token_ids
from ._sources import CellSource, encode_metadata, normalize_rows

if TYPE_CHECKING:
    from scmulan.vocab import Vocabulary

#: The ``encoding-type`` annbatch writes into the attributes of a collection's root group.
ENCODING = "annbatch-preshuffled"


def is_annbatch(data: Any) -> bool:
    """Whether ``data`` is an annbatch collection: a ``DatasetCollection``, its zarr group or its path.

    Parameters
    ----------
    data
        Anything a corpus may hold.
    """
    if type(data).__module__.split(".")[0] == "annbatch":
        return True
    attrs = getattr(data, "attrs", None)
    if attrs is not None and type(data).__module__.split(".")[0] == "zarr":
        return attrs.get("encoding-type") == ENCODING
    if not isinstance(data, str | os.PathLike) or not os.path.isfile(os.path.join(os.fspath(data), "zarr.json")):
        return False
    try:
        with open(os.path.join(os.fspath(data), "zarr.json")) as f:
            return json.load(f).get("attributes", {}).get("encoding-type") == ENCODING
    except (OSError, ValueError):
        return False


class AnnbatchSource(CellSource):
    """The cells of an annbatch collection, read chunk by chunk from its zarr datasets.

    Parameters
    ----------
    data
        The collection: its path (``"atlas.zarr"``), its zarr group, or an ``annbatch.DatasetCollection``.
    vocab
        The model's vocabulary.
    obs_keys
        Metadata field -> ``obs`` column, as for :class:`~scmulan.sentence.CellSource`.
    layer
        Layer of each dataset with the expression (``None``: ``X``).
    gene_symbols
        ``var`` column with gene identifiers (default: the ``var`` index).
    normalize
        Apply ``normalize_total(1e4)`` + ``log1p`` to every chunk (for raw counts).
    """

    def __init__(
        self,
        data: Any,
        vocab: Vocabulary,
        *,
        obs_keys: Mapping[str, str] | None = None,
        layer: str | None = None,
        gene_symbols: str | None = None,
        normalize: bool = False,
    ) -> None:
        import anndata as ad
        import zarr

        self.vocab = vocab
        self.obs_keys = dict(obs_keys or {})
        self.layer = layer
        self.gene_symbols = gene_symbols
        self.normalize = normalize
        self._adata = None
        if type(data).__module__.split(".")[0] == "annbatch":
            data = data._group  # DatasetCollection keeps its zarr group there
        self.path = os.fspath(data) if isinstance(data, str | os.PathLike) else None
        try:
            group = zarr.open_group(self.path, mode="r") if self.path is not None else data
        except Exception as err:  # zarr raises several types for a path that is not a group
            msg = f"Could not open {self.path!r} as an annbatch collection (a zarr group) ({err})."
            raise ValueError(msg) from err
        if group.attrs.get("encoding-type") != ENCODING:
            msg = (
                f"{self.path or 'The zarr group'} is not an annbatch collection (no `encoding-type: {ENCODING}` in "
                "its attributes); write one with `annbatch.DatasetCollection(path).add_adatas(files)`."
            )
            raise ValueError(msg)
        keys = sorted((k for k in group.keys() if re.fullmatch(r"dataset_[0-9]+", k)), key=lambda k: int(k[8:]))
        self._keys = keys
        self._group = group
        sizes = [int(self._matrix_group(group[k]).attrs["shape"][0]) for k in keys]
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.n_obs = int(self._offsets[-1])
        if self.n_obs == 0:
            msg = f"The annbatch collection {self.path or ''} has no cells; add datasets with `add_adatas`."
            raise ValueError(msg)
        obs = pd.concat([self._obs(group[k], k) for k in keys])
        self._metadata = encode_metadata(obs.reset_index(drop=True), vocab, self.obs_keys)
        var = ad.io.read_elem(group[keys[0]]["var"])
        for k in keys[1:]:
            other = ad.io.read_elem(group[k]["var"][group[k]["var"].attrs["_index"]])
            if not np.array_equal(np.asarray(other, dtype=str), var.index.to_numpy(dtype=str)):
                msg = f"Dataset {k!r} of the annbatch collection has other genes than {keys[0]!r}."
                raise ValueError(msg)
        self._col_token = gene_token_ids(ad.AnnData(var=var), vocab, gene_symbols=gene_symbols)
        if not (self._col_token >= 0).any():
            msg = (
                f"The annbatch collection shares no gene with the model's vocabulary (e.g. model genes "
                f"{vocab.genes[:3]}, collection genes {list(var.index[:3])}); pass `gene_symbols=` the `var` column "
                "with gene symbols, or run `scmulan.pp.prepare` on the AnnData files before writing the collection."
            )
            raise ValueError(msg)
        self._arrays: list | None = None

    def _matrix_group(self, dataset: Any) -> Any:
        if self.layer is None:
            return dataset["X"]
        if "layers" not in dataset or self.layer not in dataset["layers"]:
            msg = f"The annbatch collection has no layer {self.layer!r}; pass `layer=None` to read `X`."
            raise ValueError(msg)
        return dataset["layers"][self.layer]

    @property
    def obs_names(self) -> pd.Index:
        """The cells' names (each dataset's ``obs`` index), in the collection's row order."""
        import anndata as ad

        names = []
        for key in self._keys:
            obs = self._group[key]["obs"]
            names.append(np.asarray(ad.io.read_elem(obs[obs.attrs["_index"]]), dtype=str))
        return pd.Index(np.concatenate(names))

    def _obs(self, dataset: Any, key: str) -> pd.DataFrame:
        import anndata as ad

        obs = dataset["obs"]
        columns = {}
        for field, column in self.obs_keys.items():
            if column not in obs:
                names = list(obs.attrs.get("column-order", []))
                msg = (
                    f"`obs` of the annbatch collection ({key}) has no column {column!r} (the {field!r} field). "
                    f"Register the column it has for that field (e.g. `{field}_key=...` in `setup_anndata`); its "
                    f"columns are {names}."
                )
                raise ValueError(msg)
            columns[column] = ad.io.read_elem(obs[column])
        n = int(self._matrix_group(dataset).attrs["shape"][0])
        return pd.DataFrame(columns, index=pd.RangeIndex(n))

    # -- reading -------------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # opened again where the source arrives
        return state

    def _open(self) -> None:
        return None

    def _datasets(self) -> list:
        if self._arrays is None:
            import anndata as ad

            self._arrays = [ad.io.sparse_dataset(self._matrix_group(self._group[k])) for k in self._keys]
        return self._arrays

    @property
    def col_token(self) -> np.ndarray:
        """Token id of every gene of the collection (``-1``: not a model gene)."""
        return self._col_token

    @property
    def metadata(self) -> np.ndarray:
        """Metadata token ids ``(n_obs, len(obs_keys))``."""
        return self._metadata

    def read(self, rows: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
        """Expression (CSR, float32, log-normalised) and metadata ids of ``rows`` (in the given order)."""
        rows = np.asarray(rows, dtype=np.int64)
        cells, inverse = np.unique(rows, return_inverse=True)  # sorted, once each
        dataset = np.searchsorted(self._offsets, cells, side="right") - 1
        parts = []
        arrays = self._datasets()
        for k in np.unique(dataset):
            local = cells[dataset == k] - self._offsets[k]
            if local[-1] - local[0] + 1 == len(local):  # contiguous: one slice read
                parts.append(arrays[k][int(local[0]) : int(local[-1]) + 1])
            else:
                parts.append(arrays[k][local])
        X = sparse.vstack([sparse.csr_matrix(p) for p in parts], format="csr")[inverse.ravel()]  # requested order
        if self.normalize:
            X = normalize_rows(X)
        return X.astype(np.float32, copy=False), self._metadata[rows]
