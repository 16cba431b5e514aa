"""Shared fixtures: the legacy reference folder and small synthetic cells with a matching vocabulary."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scmulan.vocab import Vocabulary


def _load_paths():
    # tests/ is not a package (pytest runs with --import-mode=importlib): load _paths.py by file, once.
    name = "scmulan_tests_paths"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_paths.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_paths = _load_paths()


@pytest.fixture(scope="session")
def legacy_dir() -> Path:
    """The legacy parity folder (reference vectors of the original scMulan); skips when it is absent."""
    path = _paths.legacy_parity_dir()
    if path is None or not Path(path).is_dir():
        pytest.skip(_paths.PARITY_SKIP_REASON)
    return Path(path)


@pytest.fixture(scope="session")
def legacy_vocab(legacy_dir) -> Vocabulary:
    """The original scMulan vocabulary (``meta_info.pt``, 2,222 tokens, original ids)."""
    return Vocabulary.from_legacy_meta_info(legacy_dir / "meta_info.pt")


# ---------------------------------------------------------------------------- toy cells

TOY_ORGANS = ("Lung", "Liver", "Heart")
TOY_REGIONS = ("Upper", "Lower")
TOY_FINE = {"T cell": ("CD4 T", "CD8 T"), "B cell": ("Naive B", "Memory B"), "Myeloid": ("Monocyte", "DC")}
TOY_OBS_KEYS = {
    "organ": "organ",
    "region": "region",
    "coarse_cell_type": "coarse_cell_type",
    "cell_type": "cell_type",
}


def toy_gene_names(n_genes: int, n_barcodes: int = 0) -> list[str]:
    """``G000…`` signal genes, then ``BC0000…`` barcode genes (one per cell, see :func:`make_toy_cells`)."""
    return [f"G{i:03d}" for i in range(n_genes)] + [f"BC{i:04d}" for i in range(n_barcodes)]


def make_toy_vocab(n_genes: int = 30, n_barcodes: int = 0) -> Vocabulary:
    """A new-layout vocabulary over the toy genes and the toy metadata categories."""
    return Vocabulary.build(
        toy_gene_names(n_genes, n_barcodes),
        {
            "organ": list(TOY_ORGANS),
            "region": list(TOY_REGIONS),
            "coarse_cell_type": list(TOY_FINE),
            "cell_type": [f for fines in TOY_FINE.values() for f in fines],
        },
    )


def make_toy_cells(
    n_obs: int = 40,
    n_genes: int = 30,
    *,
    seed: int = 0,
    density: float = 0.3,
    barcodes: bool = False,
    p_missing: float = 0.2,
    n_empty: int = 0,
    extra_genes: int = 0,
) -> ad.AnnData:
    """Log-normalised toy cells (float32 CSR) with ``organ``, ``region``, ``coarse_cell_type``, ``cell_type``.

    Each metadata value is missing (NaN) with probability ``p_missing``, independently per field. With
    ``barcodes`` cell ``i`` also expresses its own gene ``BC{i:04d}`` above every other gene, so a sentence
    names its cell. The first ``n_empty`` cells express nothing. ``extra_genes`` adds non-model genes ``X…``.
    """
    rng = np.random.default_rng(seed)
    n_bc = n_obs if barcodes else 0
    counts = rng.poisson(3.0, size=(n_obs, n_genes)) * (rng.random((n_obs, n_genes)) < density)
    extra = rng.poisson(3.0, size=(n_obs, extra_genes)) * (rng.random((n_obs, extra_genes)) < density)
    X = np.log1p(np.hstack([counts, extra]).astype(np.float32))
    if barcodes:
        bc = np.zeros((n_obs, n_bc), dtype=np.float32)
        bc[np.arange(n_obs), np.arange(n_obs)] = X.max() + 1.0
        X = np.hstack([X, bc])
    X[:n_empty] = 0
    names = [f"G{i:03d}" for i in range(n_genes)] + [f"X{i:03d}" for i in range(extra_genes)]
    names += toy_gene_names(0, n_bc)

    coarse = rng.choice(list(TOY_FINE), size=n_obs)
    fine = np.array([TOY_FINE[c][rng.integers(2)] for c in coarse], dtype=object)
    obs = pd.DataFrame(
        {
            "organ": rng.choice(TOY_ORGANS, size=n_obs).astype(object),
            "region": rng.choice(TOY_REGIONS, size=n_obs).astype(object),
            "coarse_cell_type": coarse.astype(object),
            "cell_type": fine,
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    for col in obs:
        obs.loc[rng.random(n_obs) < p_missing, col] = np.nan
        obs[col] = pd.Categorical(obs[col])
    return ad.AnnData(sparse.csr_matrix(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=names))


@pytest.fixture
def toy_cells() -> Callable[..., ad.AnnData]:
    """Factory: :func:`make_toy_cells`."""
    return make_toy_cells


@pytest.fixture
def toy_vocab_factory() -> Callable[..., Vocabulary]:
    """Factory: :func:`make_toy_vocab`."""
    return make_toy_vocab


@pytest.fixture(scope="session")
def toy_vocab() -> Vocabulary:
    """Vocabulary over 30 toy genes (no barcodes) and the toy metadata."""
    return make_toy_vocab(30)


@pytest.fixture(scope="session")
def toy_obs_keys() -> dict[str, str]:
    """Metadata field -> obs column of the toy cells."""
    return dict(TOY_OBS_KEYS)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run fastest on one thread, and two threads on a busy 2-core machine thrash (100x slower)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
