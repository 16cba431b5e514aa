"""Fixtures for the model tests: a small prepared synthetic atlas and one tiny model trained once for the directory.

Everything that trains is session-scoped (visible only to ``tests/model``) and must not be modified by a test:
tests that change a model load their own copy from :func:`saved_dir`.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import scmulan

# setup_anndata keywords of the fields the trained model uses
OBS_KEYS = {
    "organ_key": "organ",
    "region_key": "region",
    "coarse_cell_type_key": "coarse_cell_type",
    "cell_type_key": "cell_type",
}
N_CELLS = 300
# the smallest atlas synthetic_atlas accepts with 100 genes: 3 coarse x 2 fine types
ATLAS = {
    "n_genes": 100,
    "n_coarse_types": 3,
    "n_fine_per_coarse": 2,
    "n_coarse_markers": 8,
    "n_fine_markers": 4,
}
# Lightning's remarks about a tiny run (few batches, temporary checkpoint folder) are not what these tests check.
LIGHTNING_NOISE = (
    "ignore:.*Checkpoint directory.*exists and is not empty",
    "ignore:.*IterableDataset.*has `__len__` defined",
    "ignore:The number of training batches",
    "ignore:.*LeafSpec.*is deprecated",
)


def pytest_collection_modifyitems(config, items):
    here = str(config.rootpath / "tests" / "model")
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


def make_atlas(n_cells: int = N_CELLS, seed: int = 0) -> ad.AnnData:
    """A prepared (log-normalised), unregistered synthetic atlas with every metadata column."""
    adata = scmulan.datasets.synthetic_atlas(n_cells=n_cells, seed=seed, **ATLAS)
    scmulan.pp.prepare(adata)
    return adata


@pytest.fixture(scope="session")
def atlas_template() -> ad.AnnData:
    """The prepared atlas; never registered or modified (tests copy it)."""
    return make_atlas()


@pytest.fixture
def atlas(atlas_template) -> ad.AnnData:
    """A fresh, unregistered copy of the prepared atlas (300 cells x 100 genes)."""
    return atlas_template.copy()


@pytest.fixture(scope="session")
def reference(atlas_template) -> ad.AnnData:
    """The registered training data: the atlas with some labels missing (NaN), as in real references."""
    ref = atlas_template.copy()
    rng = np.random.default_rng(1)
    for column in ("cell_type", "organ"):
        values = ref.obs[column].astype(object).to_numpy()
        values[rng.random(ref.n_obs) < 0.1] = np.nan
        ref.obs[column] = pd.Categorical(values)
    scmulan.SCMULAN.setup_anndata(ref, **OBS_KEYS)
    return ref


@pytest.fixture(scope="session")
def trained(reference) -> scmulan.SCMULAN:
    """A tiny model trained 1 epoch on :func:`reference` (80% train, 10% validation, 10% held out). Read only.

    It has the gene bag (``gene_bag=True``, off in the presets), so that every model-level test goes through it too.
    """
    model = scmulan.SCMULAN(reference, config="tiny", gene_bag=True)
    # batch size 16: 240 training cells give 15 steps, past Lightning's logging interval of 10 steps
    model.train(max_epochs=1, batch_size=16, train_size=0.8, validation_size=0.1, enable_progress_bar=False)
    return model


@pytest.fixture(scope="session")
def saved_dir(trained, tmp_path_factory):
    """:func:`trained` saved once; load it to get a model a test may modify."""
    path = tmp_path_factory.mktemp("saved") / "model"
    trained.save(path)
    return path


@pytest.fixture(scope="session")
def query(atlas_template) -> ad.AnnData:
    """Unregistered, unlabelled query cells (the atlas expression, no metadata columns). Read only."""
    return ad.AnnData(
        atlas_template.X.copy(),
        obs=pd.DataFrame(index=atlas_template.obs_names.copy()),
        var=atlas_template.var[[]].copy(),
    )
