"""The expression-space open-set score: it flags a type the reference lacks, is what ``open_set=True`` thresholds,
is saved with the model, and calibrations saved before it (Mahalanobis only) still work."""

from __future__ import annotations

import numpy as np
import pytest

import scmulan
from scmulan.model._calibration import UNKNOWN, Calibration
from scmulan.model._novelty import ExpressionSpace, fit_expression_space, knn_distance
from scmulan.sentence import CellSource

# the test atlas's design (conftest.ATLAS) with clearer markers: at the default strength even a k-nearest-neighbour
# search over all genes cannot tell a left-out type from the rest
ATLAS = {"n_genes": 100, "n_coarse_types": 3, "n_fine_per_coarse": 2, "n_coarse_markers": 8, "n_fine_markers": 4}


def test_knn_distance_is_the_mean_distance_to_the_nearest_reference_rows():
    reference = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    x = np.array([[0.0, 0.0], [10.0, 3.0]])
    np.testing.assert_allclose(knn_distance(x, reference, 2), [0.5, (3.0 + np.sqrt(81 + 9)) / 2], rtol=1e-6)
    np.testing.assert_allclose(knn_distance(x, reference, 1, chunk_size=1), [0.0, 3.0], rtol=1e-6)


def test_expression_space_flags_a_type_absent_from_the_reference(trained):
    atlas = scmulan.datasets.synthetic_atlas(n_cells=300, seed=0, marker_strength=2.0, **ATLAS)
    scmulan.pp.prepare(atlas)
    coarse = atlas.obs["coarse_cell_type"].astype(str).to_numpy()
    unseen = coarse == np.unique(coarse)[0]
    rng = np.random.default_rng(0)
    seen = np.flatnonzero(~unseen)
    rng.shuffle(seen)
    ref_rows, held_rows = np.sort(seen[: len(seen) // 2]), np.sort(seen[len(seen) // 2 :])
    source = CellSource(atlas, trained.vocab)
    space = fit_expression_space(source, ref_rows, n_components=10, k=5)
    assert space.reference.shape == (len(ref_rows), 11)  # 10 components and the residual
    threshold = np.quantile(space.score(source, held_rows), 0.95)
    assert (space.score(source, np.flatnonzero(unseen)) > threshold).mean() > 0.8
    # the state round-trips through its dict, and scoring in small chunks gives the same scores (to float32 rounding:
    # the distances are float32 matrix products, whose sums a BLAS may order differently for other chunk shapes)
    again = ExpressionSpace.from_dict(space.to_dict())
    np.testing.assert_allclose(
        again.score(source, held_rows, chunk_size=7), space.score(source, held_rows), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="at least 10 reference cells"):
        fit_expression_space(source, ref_rows[:9], k=5)


def test_cells_without_a_model_gene_get_no_score(atlas, trained):
    source = CellSource(atlas, trained.vocab)
    space = fit_expression_space(source, np.arange(100), n_components=5, k=5)
    empty = atlas[:3].copy()
    empty.X = np.zeros(empty.shape, dtype=np.float32)
    assert np.isnan(space.score(CellSource(empty, trained.vocab))).all()


def test_open_set_thresholds_the_expression_score_and_records_it(trained, query):
    cal = trained.calibration_
    assert cal["open_set_method"] == "expression_knn"
    assert cal["expression"]["reference"].shape[0] > 10
    adata = query.copy()
    scmulan.tl.annotate(adata, trained, open_set=True, progress=False)
    score = adata.obs["scmulan_open_set_score"].to_numpy()
    flagged = adata.obs["scmulan_fine"].astype(str).to_numpy() == UNKNOWN
    np.testing.assert_array_equal(flagged, score > cal["threshold"])
    assert flagged.mean() < 0.3  # the reference's own types
    assert adata.uns["scmulan"]["open_set"]["threshold"] == cal["threshold"]
    assert adata.uns["scmulan"]["open_set"]["quantile"] == cal["quantile"]


def test_expression_space_is_saved_with_the_model(trained, saved_dir, reference, query):
    model = scmulan.SCMULAN.load(saved_dir, adata=reference)
    for name in ("genes", "mean", "scale", "components", "reference"):
        np.testing.assert_array_equal(model.calibration_["expression"][name], trained.calibration_["expression"][name])
    assert "reference" not in (saved_dir / "model.json").read_text()  # arrays go to the safetensors file
    a = trained.annotate(query, progress=False, open_set=True)["open_set_score"].to_numpy()
    b = model.annotate(query, progress=False, open_set=True)["open_set_score"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_a_calibration_saved_before_the_expression_score_keeps_the_mahalanobis_one(
    saved_dir, reference, query, atlas, tmp_path
):
    model = scmulan.SCMULAN.load(saved_dir, adata=reference)
    cal = model.calibrate(atlas[:60], open_set_method="mahalanobis")
    assert cal.open_set_method == "mahalanobis"
    old = {k: v for k, v in cal.to_dict().items() if k not in ("open_set_method", "expression")}  # an older save
    model.calibration_ = old
    model.save(tmp_path / "old")
    model = scmulan.SCMULAN.load(tmp_path / "old", adata=reference)
    frame, embedding = model.annotate(query, progress=False, open_set=True, return_embedding=True)
    expected = Calibration.from_dict(old).mahalanobis(embedding)
    np.testing.assert_allclose(frame["open_set_score"].to_numpy(), expected, rtol=1e-5)
    assert ((frame["fine"].astype(str) == UNKNOWN) == (frame["open_set_score"] > old["threshold"])).all()
    with pytest.raises(ValueError, match="expression_knn"):
        model.calibrate(atlas[:60], open_set_method="energy")


def test_open_set_reads_stored_cells_a_chunk_at_a_time(trained, query, tmp_path):
    path = tmp_path / "query.h5ad"
    query.write_h5ad(path)
    in_memory = trained.annotate(query, progress=False, open_set=True)["open_set_score"].to_numpy()
    stored = trained.annotate(str(path), progress=False, open_set=True)["open_set_score"].to_numpy()
    np.testing.assert_allclose(stored, in_memory, rtol=1e-5)


def test_held_out_cells_are_left_out_of_the_reference(saved_dir, reference, atlas):
    model = scmulan.SCMULAN.load(saved_dir, adata=reference)  # after loading: the whole attached reference
    model.calibrate(atlas[:60])  # cells of the attached reference given as held out
    assert model.calibration_["expression"]["reference"].shape[0] == reference.n_obs - 60
