"""Inference on cells where they are stored: an .h5ad path, a TileDB-SOMA experiment or query, a built source."""

from __future__ import annotations

import numpy as np
import pytest

from scmulan.sentence import CellSource


def _same_annotation(stored, in_memory) -> None:
    assert list(stored["fine"].astype(str)) == list(in_memory["fine"].astype(str))
    assert list(stored["coarse"].astype(str)) == list(in_memory["coarse"].astype(str))
    np.testing.assert_allclose(stored["confidence"], in_memory["confidence"], atol=1e-5)


def test_an_h5ad_path_is_read_backed_with_the_same_results(trained, query, tmp_path):
    path = tmp_path / "query.h5ad"
    query.write_h5ad(path)
    expected = trained.annotate(query, progress=False)
    labels = trained.annotate(str(path), progress=False)
    _same_annotation(labels, expected)
    assert labels.index.equals(query.obs_names)
    meta = trained.predict_metadata(path, ["organ"], progress=False)
    assert list(meta["organ"].astype(str)) == list(
        trained.predict_metadata(query, ["organ"], progress=False)["organ"].astype(str)
    )
    mean = trained.get_latent_representation(str(path), pooling="mean", progress=False)
    np.testing.assert_allclose(
        mean, trained.get_latent_representation(query, pooling="mean", progress=False), atol=1e-5
    )


def test_raw_counts_of_a_stored_query_are_normalised_as_they_are_read(trained, query, tmp_path):
    counts = query.copy()
    counts.X = counts.X.copy()
    counts.X.data = np.round(np.expm1(counts.X.data) * 7).astype(np.float32) + 1  # integral, not log-normalised
    path = tmp_path / "counts.h5ad"
    counts.write_h5ad(path)
    labels = trained.annotate(str(path), progress=False)  # no error asking for pp.prepare: read and normalised
    assert labels["fine"].notna().all()
    with pytest.raises(ValueError, match="prepare"):
        trained.annotate(counts, progress=False)  # in memory, the user normalises (nothing is changed silently)


def test_soma_experiment_and_query(trained, query, tmp_path):
    soma = pytest.importorskip("tiledbsoma")
    import tiledbsoma.io

    uri = str(tmp_path / "soma")
    tiledbsoma.io.from_anndata(uri, query, measurement_name="RNA")
    expected = trained.annotate(query, progress=False)
    labels = trained.annotate(uri, progress=False)
    _same_annotation(labels, expected)
    assert labels.index.name == "soma_joinid"
    assert list(labels.index) == [str(i) for i in range(query.n_obs)]
    with soma.Experiment.open(uri) as experiment:
        first = experiment.axis_query("RNA", obs_query=soma.AxisQuery(coords=(slice(0, 49),)))
        part = trained.annotate(first, progress=False)
    _same_annotation(part, expected.iloc[:50])


def test_built_sources_and_their_errors(trained, query):
    source = CellSource(query, trained.vocab)
    _same_annotation(trained.annotate(source, progress=False), trained.annotate(query, progress=False))
    labelled = query.copy()
    labelled.obs["cell_type"] = "x"
    reads_labels = CellSource(labelled, trained.vocab, obs_keys={"cell_type": "cell_type"})
    with pytest.raises(ValueError, match=r"reads the field\(s\) \['cell_type'\] that `annotate"):
        trained.annotate(reads_labels, progress=False)
    with pytest.raises(TypeError, match="one data set at a time"):
        trained.annotate([source, source], progress=False)
