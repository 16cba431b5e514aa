"""``scmulan.tl.smooth_labels`` against an independent kNN vote written here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors

import scmulan

N_PER_CLUSTER = 20
CENTRES = {"A": (0.0, 0.0), "B": (6.0, 0.0), "C": (0.0, 6.0)}


@pytest.fixture
def cells() -> AnnData:
    """60 cells in three well separated 2-D clusters; 6 labels flipped to another cluster's, 4 missing."""
    rng = np.random.default_rng(0)
    truth = np.repeat(list(CENTRES), N_PER_CLUSTER)
    emb = np.concatenate([rng.normal(c, 1.0, size=(N_PER_CLUSTER, 2)) for c in CENTRES.values()]).astype(np.float32)
    labels = truth.astype(object)
    flipped = np.array([3, 11, 25, 33, 47, 55])
    labels[flipped] = np.where(truth[flipped] == "A", "B", "A")
    labels[[5, 28, 41, 59]] = np.nan
    adata = AnnData(np.ones((len(truth), 1), dtype=np.float32))
    adata.obs["scmulan_fine"] = pd.Categorical(labels)
    adata.obs["truth"] = truth
    adata.obsm["X_scmulan"] = emb
    return adata


def oracle(emb, labels, k, *, weighted, threshold, unassigned="Unclassified"):
    """Per cell: the k nearest other cells vote (weight 1/distance or 1); ties go to the first category."""
    categories = list(pd.Categorical(labels).categories)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
    out, scores = [], []
    for i in range(len(emb)):
        votes = dict.fromkeys(categories, 0.0)
        neighbours = [(d, j) for d, j in zip(dist[i], idx[i], strict=True) if j != i][:k]
        for d, j in neighbours:
            if pd.notna(labels[j]):
                votes[labels[j]] += 1.0 / d if weighted else 1.0
        total = sum(votes.values())
        best = max(categories, key=lambda c: (votes[c], -categories.index(c)))
        score = votes[best] / total if total > 0 else 0.0
        scores.append(score)
        out.append(best if total > 0 and score >= threshold else unassigned)
    return np.array(out, dtype=object), np.array(scores)


@pytest.mark.parametrize(("k", "weighted", "threshold"), [(5, True, 0.5), (7, False, 0.5), (4, False, 0.8)])
def test_smoothing_matches_the_oracle(cells, k, weighted, threshold):
    expected, scores = oracle(
        cells.obsm["X_scmulan"], cells.obs["scmulan_fine"].to_numpy(), k, weighted=weighted, threshold=threshold
    )
    scmulan.tl.smooth_labels(cells, n_neighbors=k, weighted=weighted, threshold=threshold)
    smoothed = cells.obs["scmulan_fine_smoothed"]
    assert isinstance(smoothed.dtype, pd.CategoricalDtype)
    assert list(smoothed.astype(str)) == list(expected)
    np.testing.assert_allclose(cells.obs["scmulan_fine_smoothed_score"], scores, rtol=1e-5)
    params = cells.uns["scmulan_fine_smoothed"]["smooth_labels"]["params"]
    assert params["n_neighbors"] == k
    assert params["weighted"] == weighted


def test_smoothing_repairs_flipped_and_missing_labels(cells):
    scmulan.tl.smooth_labels(cells, n_neighbors=7, key_added="smooth")
    assert (cells.obs["smooth"].astype(str) == cells.obs["truth"]).mean() >= 0.95
    assert cells.obs["smooth"].notna().all()


def test_copy_leaves_the_input_alone(cells):
    out = scmulan.tl.smooth_labels(cells, n_neighbors=5, copy=True)
    assert "scmulan_fine_smoothed" in out.obs
    assert "scmulan_fine_smoothed" not in cells.obs
    assert scmulan.tl.smooth_labels(cells, n_neighbors=5) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": "labels"}, "run `scmulan.tl.annotate"),
        ({"use_rep": "X_pca"}, "run `scmulan.tl.embed"),
        ({"threshold": 2}, "vote share in \\[0, 1\\]"),
        ({"n_neighbors": 60}, "n_neighbors` must be between 1 and n_obs - 1"),
    ],
)
def test_bad_arguments_name_the_fix(cells, kwargs, match):
    with pytest.raises(ValueError, match=match):
        scmulan.tl.smooth_labels(cells, **kwargs)


def test_cells_without_an_embedding_neither_vote_nor_get_a_vote(cells):
    lost = [0, 21, 45]  # e.g. cells that expressed no model gene: annotate leaves their embedding NaN
    cells.obsm["X_scmulan"][lost] = np.nan
    scmulan.tl.smooth_labels(cells, n_neighbors=5, weighted=False)
    assert list(cells.obs["scmulan_fine_smoothed"].iloc[lost].astype(str)) == ["Unclassified"] * 3
    assert cells.obs["scmulan_fine_smoothed_score"].iloc[lost].isna().all()
    rest = np.setdiff1d(np.arange(cells.n_obs), lost)
    expected, scores = oracle(
        cells.obsm["X_scmulan"][rest], cells.obs["scmulan_fine"].to_numpy()[rest], 5, weighted=False, threshold=0.5
    )
    assert list(cells.obs["scmulan_fine_smoothed"].iloc[rest].astype(str)) == list(expected)
    np.testing.assert_allclose(cells.obs["scmulan_fine_smoothed_score"].iloc[rest], scores, rtol=1e-5)


def test_labels_that_are_all_missing_are_refused(cells):
    cells.obs["scmulan_fine"] = pd.Categorical([np.nan] * cells.n_obs)
    with pytest.raises(ValueError, match="holds no labels"):
        scmulan.tl.smooth_labels(cells, n_neighbors=5)
    assert "scmulan_fine_smoothed" not in cells.obs


@pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")
def test_mudata_labels_are_smoothed_in_the_rna_modality(cells):
    from mudata import MuData

    expected = scmulan.tl.smooth_labels(cells, n_neighbors=5, copy=True).obs["scmulan_fine_smoothed"]
    mdata = MuData({"rna": cells})
    assert scmulan.tl.smooth_labels(mdata, n_neighbors=5) is None
    assert list(mdata.mod["rna"].obs["scmulan_fine_smoothed"].astype(str)) == list(expected.astype(str))
