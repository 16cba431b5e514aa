"""Cells of a TileDB-SOMA experiment (the CELLxGENE Census format), streamed by query without loading the matrix.

A :class:`SomaSource` is a :class:`~scmulan.sentence.CellSource`: row ``i`` is the ``i``-th cell of the query in
``soma_joinid`` order, so :class:`~scmulan.sentence.TrainingSentenceDataset` plans, shards over ranks and workers,
and resumes it exactly as it does an ``.h5ad`` shard. The query's ``obs`` columns and ``var`` gene names are read
once (small); expression is read from the ``X`` layer chunk by chunk, as the rows are asked for. ``tiledbsoma`` is
imported only here, when a SOMA source is built (``pip install 'scmulan[dataloaders]'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from ._genes import gene_token_ids
from ._sources import CellSource, encode_metadata, normalize_rows

if TYPE_CHECKING:
    from scmulan.vocab import Vocabulary

#: ``var`` columns that hold gene names, in the order :class:`SomaSource` tries them when none is named: the
#: Census' gene symbols, then the index that :func:`tiledbsoma.io.from_anndata` writes.
GENE_COLUMNS = ("feature_name", "var_id")

_INSTALL = "Install the optional loaders with `pip install 'scmulan[dataloaders]'` (or `pip install tiledbsoma`)."


def _tiledbsoma():
    try:
        import tiledbsoma
    except ImportError as err:
        msg = f"Reading a TileDB-SOMA experiment needs the `tiledbsoma` package. {_INSTALL}"
        raise ImportError(msg) from err
    return tiledbsoma


def is_soma(data: Any) -> bool:
    """Whether ``data`` is a TileDB-SOMA experiment, query or experiment URI (checked without importing tiledbsoma).

    Parameters
    ----------
    data
        Anything a corpus may hold: an AnnData, a path, a SOMA ``Experiment`` or ``ExperimentAxisQuery``.
    """
    if type(data).__module__.split(".")[0] == "tiledbsoma":
        return True
    if not isinstance(data, str | os.PathLike):
        return False
    uri = os.fspath(data)
    if uri.startswith("tiledb://"):
        return True
    if "://" in uri:  # s3://, gs://, ...: an .h5ad file there is not streamed by SomaSource
        return not uri.endswith(".h5ad")
    return os.path.isdir(uri) and any(os.path.exists(os.path.join(uri, m)) for m in ("__tiledb_group.tdb", "__group"))


class SomaSource(CellSource):
    """The cells of a TileDB-SOMA query, read chunk by chunk from the experiment's ``X`` layer.

    TileDB cannot run in a forked process: DataLoader workers reading a SOMA source must be started with
    ``multiprocessing_context="spawn"`` (or ``"forkserver"``); a forked worker raises instead of hanging.

    Parameters
    ----------
    data
        A ``tiledbsoma.ExperimentAxisQuery`` (e.g. ``experiment.axis_query("RNA", obs_query=...)``), an open
        ``tiledbsoma.Experiment``, or the URI of one (a local folder, ``s3://…``, ``tiledb://…``). The query is
        read when the source is built (its cells, their ``obs_keys`` columns and the gene names); the user keeps
        ownership of an experiment or query passed in. Each process (DataLoader workers included) opens the
        experiment again by URI to read ``X``.
    vocab
        The model's vocabulary.
    obs_keys
        Metadata field -> ``obs`` column (e.g. ``{"organ": "tissue_general", "age": "development_stage"}`` for
        the Census), as for :class:`~scmulan.sentence.CellSource`.
    layer
        ``X`` layer to read (default: the only one, else ``"raw"``, the Census' counts).
    gene_symbols
        ``var`` column with gene names (default: the first of ``feature_name`` and ``var_id`` that exists).
    normalize
        Apply ``normalize_total(1e4)`` + ``log1p`` to every chunk (for raw counts, such as the Census' ``raw``).
    measurement
        Measurement holding the expression, when ``data`` is an experiment or URI.
    obs_value_filter
        Cells to keep, when ``data`` is an experiment or URI: a SOMA value filter such as
        ``"tissue_general == 'lung' and is_primary_data == True"``.
    tiledb_config
        TileDB settings for opening a URI (e.g. ``{"vfs.s3.region": "us-west-2"}``); a query or experiment passed
        in brings its own.
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
        measurement: str = "RNA",
        obs_value_filter: str | None = None,
        tiledb_config: Mapping[str, str] | None = None,
    ) -> None:
        soma = _tiledbsoma()
        self.vocab = vocab
        self.obs_keys = dict(obs_keys or {})
        self.gene_symbols = gene_symbols
        self.normalize = normalize
        self.path = None
        self._adata = None
        self._handle: tuple[Any, Any] | None = None  # (experiment, X array) opened by this process
        self._owner = os.getpid()  # the process that built or unpickled this source (not a fork of it)
        opened = None
        if isinstance(data, str | os.PathLike):
            context = soma.SOMATileDBContext(tiledb_config=dict(tiledb_config or {}))
            try:
                opened = soma.Experiment.open(os.fspath(data), context=context)
            except Exception as err:  # tiledbsoma raises several types for a bad URI
                msg = f"Could not open {os.fspath(data)!r} as a TileDB-SOMA experiment ({err})."
                raise ValueError(msg) from err
            data = opened
        try:
            query, experiment = self._query(soma, data, measurement, obs_value_filter)
            self._read_query(query, experiment)
            self.layer = self._pick_layer(experiment, layer)
        finally:
            if opened is not None:
                opened.close()
        self.n_obs = len(self.obs_joinids)

    # -- building ------------------------------------------------------------------------------------------------
    @staticmethod
    def _query(soma, data: Any, measurement: str, obs_value_filter: str | None) -> tuple[Any, Any]:
        if isinstance(data, soma.ExperimentAxisQuery):
            if obs_value_filter is not None:
                msg = "`obs_value_filter` applies to an experiment or URI; put the filter in the query instead."
                raise ValueError(msg)
            return data, data.experiment
        if isinstance(data, soma.Experiment):
            if measurement not in data.ms:
                msg = f"The SOMA experiment has no measurement {measurement!r}; pass `measurement=` one of "
                msg += f"{list(data.ms)}."
                raise ValueError(msg)
            obs_query = soma.AxisQuery(value_filter=obs_value_filter) if obs_value_filter else soma.AxisQuery()
            try:
                return data.axis_query(measurement, obs_query=obs_query), data
            except Exception as err:  # a bad filter may fail here
                msg = f"The SOMA value filter {obs_value_filter!r} failed ({str(err).splitlines()[0]}); `obs` "
                msg += f"columns: {data.obs.schema.names}."
                raise ValueError(msg) from err
        msg = f"Expected a tiledbsoma Experiment, ExperimentAxisQuery or experiment URI, got {type(data).__name__}."
        raise TypeError(msg)

    def _read_query(self, query: Any, experiment: Any) -> None:
        self.uri = experiment.uri
        self.measurement = query.measurement_name
        self._tiledb_config = dict(experiment.context.tiledb_config)
        obs_columns = experiment.obs.schema.names
        missing = {f: k for f, k in self.obs_keys.items() if k not in obs_columns}
        if missing:
            field, key = next(iter(missing.items()))
            msg = (
                f"The SOMA experiment's `obs` has no column {key!r} (the {field!r} field). Register the column it "
                f"has for that field (e.g. `{field}_key=...` in `setup_anndata`); its columns are {obs_columns}."
            )
            raise ValueError(msg)
        try:
            obs_ids = np.sort(query.obs_joinids().to_numpy().astype(np.int64))
        except Exception as err:  # e.g. a value filter naming a missing column
            msg = f"The SOMA query failed ({str(err).splitlines()[0]}); check its value filter against the `obs` "
            msg += f"columns {obs_columns}."
            raise ValueError(msg) from err
        if len(obs_ids) == 0:
            msg = (
                f"The SOMA query selects no cells of {self.uri!r} (measurement {self.measurement!r}): check its value "
                "filter (values are compared exactly, e.g. \"tissue_general == 'lung'\")."
            )
            raise ValueError(msg)
        self.obs_joinids = obs_ids
        columns = list(dict.fromkeys(self.obs_keys.values()))
        obs = self._frame(query.obs(column_names=["soma_joinid", *columns]), obs_ids)
        self._metadata = encode_metadata(obs, self.vocab, self.obs_keys).astype(np.int32)

        var_ids = np.sort(query.var_joinids().to_numpy().astype(np.int64))
        var_columns = query.experiment.ms[self.measurement].var.schema.names
        column = self.gene_symbols or next((c for c in GENE_COLUMNS if c in var_columns), None)
        if column is None or column not in var_columns:
            msg = (
                f"The SOMA measurement's `var` has no gene-name column {column!r}; pass `gene_symbols=` one of "
                f"{var_columns}."
            )
            raise ValueError(msg)
        var = self._frame(query.var(column_names=["soma_joinid", column]), var_ids)
        import anndata as ad

        genes = ad.AnnData(var=pd.DataFrame({column: var[column].astype(str).to_numpy()}, index=var_ids.astype(str)))
        self._col_token = gene_token_ids(genes, self.vocab, gene_symbols=column)
        if not (self._col_token >= 0).any():
            msg = (
                f"The SOMA query shares no gene with the model's vocabulary (e.g. model genes {self.vocab.genes[:3]}, "
                f"`var[{column!r}]` {list(var[column][:3])}); pass `gene_symbols=` the `var` column with gene symbols."
            )
            raise ValueError(msg)
        self.var_joinids = var_ids
        n_var = int(experiment.ms[self.measurement].var.count)
        self._all_vars = len(var_ids) == n_var and (n_var == 0 or var_ids[-1] == n_var - 1)
        self._var_position = np.full(int(var_ids[-1]) + 1 if len(var_ids) else 0, -1, dtype=np.int64)
        self._var_position[var_ids] = np.arange(len(var_ids))

    @property
    def obs_names(self) -> pd.Index:
        """The cells' ``soma_joinid`` (as strings), in row order: the index of inference results."""
        return pd.Index(self.obs_joinids.astype(str), name="soma_joinid")

    @staticmethod
    def _frame(reader: Any, joinids: np.ndarray) -> pd.DataFrame:
        """A SOMA dataframe read, in ``joinids`` order."""
        frame = reader.concat().to_pandas()
        position = np.searchsorted(frame["soma_joinid"].to_numpy(), joinids)
        if not np.array_equal(frame["soma_joinid"].to_numpy(), np.sort(frame["soma_joinid"].to_numpy())):
            frame = frame.sort_values("soma_joinid", kind="stable")
            position = np.searchsorted(frame["soma_joinid"].to_numpy(), joinids)
        return frame.iloc[position].reset_index(drop=True)

    def _pick_layer(self, experiment: Any, layer: str | None) -> str:
        layers = list(experiment.ms[self.measurement].X.keys())
        if layer is None:
            layer = layers[0] if len(layers) == 1 else "raw" if "raw" in layers else None
        if layer not in layers:
            msg = f"Pass `layer=` one of the SOMA measurement's X layers {layers} (got {layer!r})."
            raise ValueError(msg)
        return layer

    # -- reading -------------------------------------------------------------------------------------------------
    def _array(self) -> Any:
        """The ``X`` layer, opened by this process (again in a spawned worker: handles do not travel)."""
        if os.getpid() != self._owner:  # TileDB hangs in a forked copy of a process that used it
            msg = (
                "A SOMA source cannot be read in a forked process (TileDB is not fork-safe): start DataLoader "
                "workers with `multiprocessing_context='spawn'` (`SCMULAN.train` does this itself), and use "
                "`strategy='ddp'` or `'ddp_spawn'` rather than `'ddp_notebook'` or `'ddp_fork'`."
            )
            raise RuntimeError(msg)
        if self._handle is None:
            soma = _tiledbsoma()
            context = soma.SOMATileDBContext(tiledb_config=self._tiledb_config)
            experiment = soma.Experiment.open(self.uri, context=context)
            self._handle = (experiment, experiment.ms[self.measurement].X[self.layer])
        return self._handle[1]

    fork_safe = False

    def close(self) -> None:
        """Close this process's handle on the experiment (reading opens it again)."""
        if self._handle is not None and os.getpid() == self._owner:
            self._handle[0].close()
        self._handle = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._owner = os.getpid()

    def _open(self) -> None:
        return None

    @property
    def col_token(self) -> np.ndarray:
        """Token id of every gene of the query (``-1``: not a model gene)."""
        return self._col_token

    @property
    def metadata(self) -> np.ndarray:
        """Metadata token ids ``(n_obs, len(obs_keys))``."""
        return self._metadata.astype(np.int64)

    def read(self, rows: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
        """Expression (CSR, float32, log-normalised) and metadata ids of ``rows`` (positions in the query)."""
        rows = np.asarray(rows, dtype=np.int64)
        cells, inverse = np.unique(self.obs_joinids[rows], return_inverse=True)
        coords = (cells,) if self._all_vars else (cells, self.var_joinids)
        table = self._array().read(coords=coords).tables().concat()
        i = np.searchsorted(cells, table.column("soma_dim_0").to_numpy())
        j = self._var_position[table.column("soma_dim_1").to_numpy()]
        values = table.column("soma_data").to_numpy()
        X = sparse.csr_matrix((values, (i, j)), shape=(len(cells), len(self.var_joinids)))[inverse.ravel()]
        if self.normalize:
            X = normalize_rows(X)
        return X.astype(np.float32, copy=False), self._metadata[rows].astype(np.int64)
