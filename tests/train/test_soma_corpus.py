"""`SCMULAN.train(corpus=...)` with a TileDB-SOMA query named in the CELLxGENE Census' terms."""

from __future__ import annotations

import multiprocessing as mp
import warnings

import numpy as np
import pytest
import torch

import scmulan
from scmulan.sentence import SomaSource

soma = pytest.importorskip("tiledbsoma")
import tiledbsoma.io  # noqa: E402

#: The synthetic atlas' columns under the Census' names, and the setup_anndata keys that register them.
CENSUS_NAMES = {"organ": "tissue_general", "age": "development_stage", "technology": "assay"}
CENSUS_KEYS = {
    "organ_key": "tissue_general",
    "cell_type_key": "cell_type",
    "sex_key": "sex",
    "age_key": "development_stage",
    "technology_key": "assay",
    "disease_key": "disease",
}
RUN = {"max_epochs": 1, "batch_size": 32, "train_size": 1.0, "enable_progress_bar": False, "seed": 3}


@pytest.fixture(scope="module")
def census_like(tmp_path_factory):
    """A registered AnnData (prepared) and 200 more raw-count cells as a SOMA experiment and as an .h5ad file.

    Like the Census, ``obs`` uses the Census' column names and ``var`` holds Ensembl-like ids with the symbols in
    ``feature_name``.
    """
    atlas = scmulan.datasets.synthetic_atlas(n_cells=280, n_genes=160, seed=0)
    del atlas.uns["synthetic_atlas"]
    atlas.obs = atlas.obs.rename(columns=CENSUS_NAMES)
    root = tmp_path_factory.mktemp("census_like")
    corpus = atlas[80:].copy()
    h5ad = root / "corpus.h5ad"
    corpus.write_h5ad(h5ad)
    corpus.var["feature_name"] = corpus.var_names
    corpus.var_names = [f"ENSG{i:011d}" for i in range(corpus.n_vars)]
    uri = str(root / "soma")
    tiledbsoma.io.from_anndata(uri, corpus, measurement_name="RNA")
    ref = atlas[:80].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scmulan.pp.prepare(ref)
    return ref, str(h5ad), uri


def new_model(ref, **keys):
    data = ref.copy()
    scmulan.SCMULAN.setup_anndata(data, **(keys or CENSUS_KEYS))
    return scmulan.SCMULAN(data, config="tiny", seed=0)


def test_training_on_a_soma_query_equals_training_on_the_same_cells_in_h5ad(census_like):
    ref, h5ad, uri = census_like
    from_file = new_model(ref)
    from_file.train(corpus=[h5ad], **RUN)
    from_soma = new_model(ref)
    with soma.Experiment.open(uri) as experiment:
        query = experiment.axis_query("RNA", obs_query=soma.AxisQuery(value_filter="soma_joinid >= 0"))
        from_soma.train(corpus=query, **RUN)
    assert from_soma.is_trained_
    np.testing.assert_array_equal(
        from_soma.history_["train_loss"].to_numpy(), from_file.history_["train_loss"].to_numpy()
    )
    for name, weight in from_soma.module.state_dict().items():
        assert torch.equal(weight, from_file.module.state_dict()[name]), name


def test_workers_reading_a_soma_corpus_are_spawned(census_like, caplog):
    ref, _, uri = census_like
    before = mp.get_start_method(allow_none=True)
    try:
        mp.set_start_method("fork", force=True)  # Linux's default, which TileDB cannot survive
        one_process = new_model(ref)
        one_process.train(corpus=uri, **RUN)
        with_worker = new_model(ref)
        with_worker.train(corpus=uri, data_kwargs={"num_workers": 1}, **RUN)
        assert mp.get_start_method() == "spawn"
        assert "start with 'spawn'" in caplog.text
    finally:
        mp.set_start_method(before, force=True)
    np.testing.assert_array_equal(
        with_worker.history_["train_loss"].to_numpy(), one_process.history_["train_loss"].to_numpy()
    )


def test_a_soma_corpus_without_a_registered_column_is_refused(census_like):
    ref, _, uri = census_like
    data = ref.copy()
    data.obs["broad_type"] = data.obs["coarse_cell_type"]  # a column the SOMA experiment lacks
    model = new_model(data, **CENSUS_KEYS, coarse_cell_type_key="broad_type")
    with pytest.raises(
        ValueError, match=r"no column 'broad_type' \(the 'coarse_cell_type' field\).*coarse_cell_type_key"
    ):
        model.train(corpus=uri, **RUN)
    # a source built for other fields (or another order) is refused before training
    other = SomaSource(uri, model.vocab, obs_keys={"organ": "tissue_general"})
    with pytest.raises(ValueError, match="build it with `obs_keys` for the registered fields"):
        model.train(corpus=[other], **RUN)
