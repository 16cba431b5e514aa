"""Fuzzing the readers: random AnnData to ``pp.prepare`` and ``tl.annotate``, damaged model directories to ``load``.

Nothing may fail with anything but the documented errors (:class:`ValueError`, :class:`TypeError`,
:class:`FileNotFoundError`, each with a message), nor return a result of the wrong shape. ``max_examples`` is small
so that the module runs in well under a minute on one core.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import sparse

import scmulan

DOCUMENTED = (ValueError, TypeError, FileNotFoundError)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SPECIAL = [np.nan, np.inf, -np.inf, -1.0, 0.0, 0.5, 1e6]
NAMES = ["", "GENE1", "GENE1", "CD3E", "cd3e", "ENSG00000167286.9", "A_B", "TMBIM4-1", "nan", "0"]
FORMATS = {
    "dense": np.asarray,
    "csr": sparse.csr_matrix,
    "csc": sparse.csc_matrix,
    "coo": sparse.coo_matrix,
    "csr_array": sparse.csr_array,
}


@st.composite
def matrices(draw, n_obs: int, n_vars: int) -> object:
    """A matrix of a random dtype and format; floats may hold NaN, inf, negative and huge values."""
    dtype = draw(st.sampled_from(["int32", "int64", "uint8", "float32", "float64", "bool"]))
    shape = (n_obs, n_vars)
    if dtype == "bool":
        values = draw(hnp.arrays(np.bool_, shape))
    elif dtype.startswith(("int", "uint")):
        low = 0 if dtype.startswith("u") else -3
        values = draw(hnp.arrays(dtype, shape, elements=st.integers(low, 60)))
    else:
        elements = st.one_of(
            st.integers(0, 60).map(float),
            st.floats(0, 20, allow_nan=False, width=32),
            st.sampled_from(SPECIAL),
        )
        values = draw(hnp.arrays(np.float64, shape, elements=elements)).astype(dtype)
    return FORMATS[draw(st.sampled_from(list(FORMATS)))](values)


@st.composite
def anndatas(draw, gene_pool: list[str] | None = None) -> ad.AnnData:
    n_obs, n_vars = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    pool = NAMES + (gene_pool or [])
    var_names = draw(st.lists(st.sampled_from(pool), min_size=n_vars, max_size=n_vars))
    obs_names = draw(st.lists(st.sampled_from(["c", "c", "", "d", "e"]), min_size=n_obs, max_size=n_obs))
    X = draw(matrices(n_obs, n_vars))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-unique names, implicit conversions
        try:
            return ad.AnnData(X, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=var_names))
        except Exception:  # noqa: BLE001 (a matrix anndata itself refuses is not ours to fuzz)
            assume(False)


def _check_message(error: Exception) -> None:
    event(f"refused: {re.sub(r'/[^ ]*/', '', str(error))[:300]}")  # shown by --hypothesis-show-statistics
    assert isinstance(error, DOCUMENTED), f"{type(error).__name__}: {error}"
    assert len(str(error)) > 20, "an error must say what is wrong and what to do"
    assert "weights_only=False" not in str(error)  # advice that leads to arbitrary code execution


@FUZZ
@given(adata=anndatas(), with_genes=st.booleans())
def test_prepare_fuzz(adata, with_genes):
    shape = adata.shape
    genes = ["GENE1", "CD3E", "PTPRC"] if with_genes else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = scmulan.pp.prepare(adata, genes, min_overlap=0)
        except Exception as error:  # noqa: BLE001
            _check_message(error)
            assert "scmulan_prepare" not in adata.uns  # a refused call leaves the AnnData untouched
            return
    event(f"prepared: {adata.uns['scmulan_prepare']['data_kind']}")
    assert result is None
    assert adata.shape == shape
    assert adata.X.shape == shape
    assert adata.X.dtype == np.float32
    values = adata.X.data if sparse.issparse(adata.X) else np.asarray(adata.X)
    assert np.isfinite(values).all()
    assert (values >= 0).all()
    assert len(adata.var["scmulan_gene"]) == shape[1]


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """A tiny model with random weights (never trained) over a synthetic atlas, and its saved directory."""
    atlas = scmulan.datasets.synthetic_atlas(
        n_cells=30, n_genes=100, n_coarse_types=3, n_fine_per_coarse=2, n_coarse_markers=8, n_fine_markers=4
    )
    scmulan.pp.prepare(atlas)
    scmulan.SCMULAN.setup_anndata(atlas, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN(atlas, config="tiny")
    path = tmp_path_factory.mktemp("fuzz") / "model"
    model.save(path)
    return model, path


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_annotate_fuzz(random_model, data):
    model, _ = random_model
    genes = list(model.vocab.genes)
    if data.draw(st.booleans(), label="valid"):  # valid input half the time: model genes, log-normalised
        n_obs, n_vars = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
        names = data.draw(st.lists(st.sampled_from(genes[:30]), min_size=n_vars, max_size=n_vars, unique=True))
        counts = np.random.default_rng(n_obs).poisson(2.0, size=(n_obs, n_vars)).astype(np.float32)
        counts[:, 0] += 1  # every cell expresses a model gene
        totals = counts.sum(1, keepdims=True)
        X = np.log1p(np.divide(counts * 1e4, totals, out=np.zeros_like(counts), where=totals > 0))
        fmt = data.draw(st.sampled_from(["dense", "csr", "csc", "csr_array"]))
        adata = ad.AnnData(FORMATS[fmt](X), var=pd.DataFrame(index=names))
    else:
        adata = data.draw(anndatas(gene_pool=genes[:12]))
    n_obs = adata.n_obs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scmulan.tl.annotate(adata, model, progress=False)
        except Exception as error:  # noqa: BLE001
            _check_message(error)
            assert "scmulan_coarse" not in adata.obs
            return
    event("annotated")
    for column in ("scmulan_coarse", "scmulan_fine", "scmulan_confidence"):
        assert len(adata.obs[column]) == n_obs
    assert adata.obsm["X_scmulan"].shape == (n_obs, model.config.n_embd)


def _damage(path: Path, how: str, fraction: float, junk: bytes) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: int(len(data) * fraction)])
    elif how == "garbage":
        path.write_bytes(junk)
    elif how == "append":
        path.write_bytes(data + junk)
    elif how == "flip":
        i = int((len(data) - 1) * fraction)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif how == "delete":
        path.unlink()
    elif how == "json":
        path.write_bytes(b'{"a": [1, 2]}' if fraction < 0.5 else b"[]")  # valid JSON of the wrong form


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    name=st.sampled_from(["model.safetensors", "vocab.json", "model.json"]),
    how=st.sampled_from(["truncate", "garbage", "append", "flip", "delete", "json"]),
    fraction=st.floats(0, 1),
    junk=st.binary(min_size=0, max_size=64),
)
def test_load_damaged_directory_fuzz(random_model, name, how, fraction, junk):
    _, saved = random_model
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        shutil.copytree(saved, path)
        assume((path / name).exists())
        _damage(path / name, how, fraction, junk)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = scmulan.SCMULAN.load(path)
            except Exception as error:  # noqa: BLE001
                _check_message(error)
                return
    # a harmless change (e.g. one flipped byte inside a float) may load; the model must still be whole
    assert len(model.vocab) == model.config.vocab_size
