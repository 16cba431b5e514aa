"""Fixtures for the ``tl`` tests: tiny models trained once (pbmc68k and a synthetic atlas) and their query cells.

Session-scoped objects are read only: every test gets a fresh copy of the query cells to write into.
"""

from __future__ import annotations

import anndata as ad
import pytest
import torch

import scmulan

OBS_KEYS = {
    "organ_key": "organ",
    "region_key": "region",
    "coarse_cell_type_key": "coarse_cell_type",
    "cell_type_key": "cell_type",
}
LABELS = ["organ", "region", "coarse_cell_type", "cell_type", "technology"]
N_TRAIN = 300
LIGHTNING_NOISE = (
    "ignore:.*Checkpoint directory.*exists and is not empty",
    "ignore:.*IterableDataset.*has `__len__` defined",
    "ignore:The number of training batches",
    "ignore:.*LeafSpec.*is deprecated",
)


def pytest_collection_modifyitems(config, items):
    here = str(config.rootpath / "tests" / "tl")
    for item in items:
        if str(item.path).startswith(here):
            for spec in LIGHTNING_NOISE:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # many tiny forward passes: on a small shared CPU torch's intra-op threads only spin against each other
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _train(reference: ad.AnnData) -> scmulan.SCMULAN:
    scmulan.SCMULAN.setup_anndata(reference, **OBS_KEYS)
    model = scmulan.SCMULAN(reference, config="tiny")
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    return model


@pytest.fixture(scope="session")
def _pbmc() -> tuple[ad.AnnData, ad.AnnData]:
    """pbmc68k prepared, split into 300 reference cells and 400 query cells without their label columns."""
    adata = scmulan.datasets.pbmc68k()
    scmulan.pp.prepare(adata)
    reference = adata[:N_TRAIN].copy()
    query = adata[N_TRAIN:].copy()
    query.obs = query.obs.drop(columns=LABELS)
    return reference, query


@pytest.fixture(scope="session")
def pbmc_model(_pbmc) -> scmulan.SCMULAN:
    """pbmc68k -> prepare -> setup -> tiny model -> 1 epoch on 300 cells. Read only."""
    return _train(_pbmc[0].copy())


@pytest.fixture
def pbmc_query(_pbmc) -> ad.AnnData:
    """The 400 pbmc68k cells the model never saw: prepared, unregistered, no label columns (a fresh copy)."""
    return _pbmc[1].copy()


@pytest.fixture(scope="session")
def _atlas() -> tuple[ad.AnnData, ad.AnnData]:
    adata = scmulan.datasets.synthetic_atlas(
        n_cells=N_TRAIN + 100, n_genes=100, n_coarse_types=3, n_fine_per_coarse=2, n_coarse_markers=8, n_fine_markers=4
    )
    scmulan.pp.prepare(adata)
    reference = adata[:N_TRAIN].copy()
    query = adata[N_TRAIN:].copy()
    query.obs = query.obs.drop(columns=LABELS)
    return reference, query


@pytest.fixture(scope="session")
def atlas_model(_atlas) -> scmulan.SCMULAN:
    """A tiny model trained 1 epoch on 300 synthetic atlas cells (3 organs: metadata prediction is not trivial)."""
    return _train(_atlas[0].copy())


@pytest.fixture
def atlas_query(_atlas) -> ad.AnnData:
    """100 prepared, unregistered synthetic atlas cells without label columns (a fresh copy)."""
    return _atlas[1].copy()


@pytest.fixture(scope="session")
def atlas_model_dir(atlas_model, tmp_path_factory):
    """:func:`atlas_model` saved to a directory."""
    path = tmp_path_factory.mktemp("tl_model") / "atlas"
    atlas_model.save(path)
    return path
