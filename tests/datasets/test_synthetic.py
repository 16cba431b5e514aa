import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scmulan.datasets import synthetic_atlas

OBS_KEYS = ["organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease"]


@pytest.fixture(scope="module")
def atlas():
    return synthetic_atlas(1500, 300, seed=3)


def _lognorm(adata) -> np.ndarray:
    library = np.asarray(adata.X.sum(1)).ravel()
    return np.log1p(sparse.diags(1e4 / library) @ adata.X).toarray()


def test_shape_format_and_counts(atlas):
    assert atlas.shape == (1500, 300)
    assert atlas.X.format == "csr"
    assert atlas.X.dtype == np.float32
    data = atlas.X.data
    assert (data > 0).all()
    np.testing.assert_array_equal(data, np.round(data))
    assert atlas.var_names.is_unique
    assert atlas.obs_names.is_unique
    assert list(atlas.obs.columns) == OBS_KEYS
    for key in OBS_KEYS:
        assert isinstance(atlas.obs[key].dtype, pd.CategoricalDtype), key
        assert atlas.obs[key].notna().all(), key


def test_defaults_are_sparse_like_real_data():
    adata = synthetic_atlas()
    assert adata.shape == (2000, 500)
    expressed = np.diff(adata.X.indptr) / adata.n_vars
    assert 0.15 < expressed.mean() < 0.4
    assert expressed.min() > 0


def test_deterministic_by_seed():
    a, b, c = synthetic_atlas(300, 200, seed=7), synthetic_atlas(300, 200, seed=7), synthetic_atlas(300, 200, seed=8)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert a.uns["synthetic_atlas"] == b.uns["synthetic_atlas"]
    assert (a.X != c.X).nnz > 0
    assert not a.obs.equals(c.obs)
    # Gene names depend on the number of genes only.
    assert list(a.var_names) == list(c.var_names)
    assert list(synthetic_atlas(50, 250, seed=1).var_names[:200]) == list(a.var_names)


def test_hierarchy_in_obs_and_uns(atlas):
    info = atlas.uns["synthetic_atlas"]
    hierarchy = info["hierarchy"]
    assert set(hierarchy) == set(atlas.obs["cell_type"].cat.categories)
    assert set(hierarchy.values()) == set(atlas.obs["coarse_cell_type"].cat.categories)
    assert len(hierarchy) == 4 * 3
    parents = atlas.obs.groupby("cell_type", observed=True)["coarse_cell_type"].unique()
    for fine, coarse in parents.items():
        assert list(coarse) == [hierarchy[fine]], fine


def test_organs_and_regions(atlas):
    info = atlas.uns["synthetic_atlas"]
    organ_regions = info["organ_regions"]
    assert list(organ_regions) == list(atlas.obs["organ"].cat.categories)
    regions = [r for rs in organ_regions.values() for r in rs]
    assert len(regions) == len(set(regions)) == 3 * 2
    assert set(regions) == set(atlas.obs["region"].cat.categories)
    obs = atlas.obs.astype(str)
    assert all(r in organ_regions[o] for o, r in zip(obs["organ"], obs["region"], strict=True))
    hosted = info["organ_cell_types"]
    assert all(f in hosted[o] for o, f in zip(obs["organ"], obs["cell_type"], strict=True))
    assert set().union(*map(set, hosted.values())) == set(info["hierarchy"])  # every type lives somewhere
    assert any(len(types) < len(info["hierarchy"]) for types in hosted.values())  # not every type everywhere


def test_metadata_categories(atlas):
    obs = atlas.obs
    assert obs["sex"].cat.categories.tolist() == ["F", "M"]
    assert obs["age"].cat.categories.tolist() == ["20 year", "45 year", "70 year"]
    assert obs["technology"].cat.categories.tolist() == ["10X", "Smart-seq2", "Drop-seq"]
    assert obs["disease"].cat.categories[0] == "Healthy"
    assert len(obs["disease"].cat.categories) == 3
    for key in OBS_KEYS:  # the sample draws every category of every field
        assert obs[key].nunique() == len(obs[key].cat.categories), key


def test_marker_genes_are_expressed_by_their_types(atlas):
    info = atlas.uns["synthetic_atlas"]
    markers = info["markers"]
    genes = [g for kind in ("coarse", "fine") for gs in markers[kind].values() for g in gs]
    assert len(genes) == len(set(genes)) == 4 * 20 + 12 * 5  # disjoint marker sets
    assert set(genes) <= set(atlas.var_names)
    x = pd.DataFrame(_lognorm(atlas), columns=atlas.var_names)
    coarse = atlas.obs["coarse_cell_type"].to_numpy()
    for name, gs in markers["coarse"].items():
        inside, outside = x.loc[coarse == name, gs].mean(), x.loc[coarse != name, gs].mean()
        assert (inside > outside).mean() > 0.9, name
    fine = atlas.obs["cell_type"].to_numpy()
    for name, gs in markers["fine"].items():
        siblings = (coarse == info["hierarchy"][name]) & (fine != name)
        assert (x.loc[fine == name, gs].mean() > x.loc[siblings, gs].mean()).mean() >= 0.6, name


def test_sex_genes_follow_sex(atlas):
    sex_genes = atlas.uns["synthetic_atlas"]["sex_genes"]
    sex = atlas.obs["sex"].to_numpy()
    for own, other in (("F", "M"), ("M", "F")):
        counts = atlas[:, sex_genes[own]].X.toarray()
        assert counts[sex == own].mean() > 10 * counts[sex == other].mean()


@pytest.fixture(scope="module")
def effects():
    """A larger atlas (less sampling noise), its log-normalised expression, its obs as strings and control genes."""
    adata = synthetic_atlas(4000, 300, seed=3)
    info = adata.uns["synthetic_atlas"]
    used = set(info["age_genes"])
    for key in ("organ_genes", "region_genes", "disease_genes", "sex_genes"):
        used = used.union(*info[key].values())
    for kind in ("coarse", "fine"):
        used = used.union(*info["markers"][kind].values())
    control = [g for g in adata.var_names if g not in used]  # background genes no effect touches
    assert len(control) > 50
    x = pd.DataFrame(_lognorm(adata), columns=adata.var_names)
    return info, x, adata.obs.astype(str), control


def _mean_shift(x: pd.DataFrame, a: np.ndarray, b: np.ndarray) -> pd.Series:
    """|mean over cells ``a`` - mean over cells ``b``| of every gene."""
    return (x[a].mean() - x[b].mean()).abs()


def test_organ_genes_differ_between_organs(effects):
    info, x, obs, control = effects
    own, background = [], []
    for organ, genes in info["organ_genes"].items():
        inside = (obs["organ"] == organ).to_numpy()
        shift = _mean_shift(x, inside, ~inside)
        own += list(shift[genes])
        background += list(shift[control])
    assert np.median(own) > 3 * np.median(background)


def test_region_genes_differ_from_the_sibling_regions(effects):
    info, x, obs, control = effects
    own, background = [], []
    for organ, regions in info["organ_regions"].items():
        for region in regions:
            inside = (obs["region"] == region).to_numpy()
            siblings = ((obs["organ"] == organ) & (obs["region"] != region)).to_numpy()  # same organ: no organ effect
            shift = _mean_shift(x, inside, siblings)
            own += list(shift[info["region_genes"][region]])
            background += list(shift[control])
    assert np.median(own) > 3 * np.median(background)


def test_metadata_strength_scales_the_organ_genes_only():
    def organ_shift(adata):
        info, x, obs = adata.uns["synthetic_atlas"], pd.DataFrame(_lognorm(adata)), adata.obs.astype(str)
        shifts = []
        for organ, genes in info["organ_genes"].items():
            inside = (obs["organ"] == organ).to_numpy()
            shifts += list(_mean_shift(x.set_axis(adata.var_names, axis=1), inside, ~inside)[genes])
        return np.median(shifts)

    default, strong = synthetic_atlas(2000, 300, seed=3), synthetic_atlas(2000, 300, metadata_strength=4.0, seed=3)
    assert organ_shift(strong) > 2 * organ_shift(default)
    # the same draws otherwise: cell labels are identical, and metadata_strength=1 is the default atlas exactly
    pd.testing.assert_frame_equal(strong.obs, default.obs)
    assert (synthetic_atlas(300, 200, metadata_strength=1.0, seed=3).X != synthetic_atlas(300, 200, seed=3).X).nnz == 0


def test_age_genes_trend_with_age(effects):
    info, x, obs, control = effects
    genes = info["age_genes"]
    means = [x[(obs["age"] == age).to_numpy()].mean() for age in ("20 year", "45 year", "70 year")]
    shift = (means[2] - means[0]).abs()
    assert np.median(shift[genes]) > 3 * np.median(shift[control])
    monotone = np.sign(means[1] - means[0]) == np.sign(means[2] - means[1])
    assert monotone[genes].mean() >= 0.8  # a smooth trend: the middle age lies between the others
    assert monotone[control].mean() < 0.7


def test_disease_genes_shift_only_in_the_affected_cell_types(effects):
    info, x, obs, control = effects
    healthy = (obs["disease"] == "Healthy").to_numpy()
    affected_shift, other_shift, control_shift = [], [], []
    assert len(info["disease_genes"]) == 2
    for disease, genes in info["disease_genes"].items():
        sick = (obs["disease"] == disease).to_numpy()
        affected = obs["coarse_cell_type"].isin(info["disease_cell_types"][disease]).to_numpy()
        assert 0 < affected.mean() < 1
        affected_shift += list(_mean_shift(x, sick & affected, healthy & affected)[genes])
        other_shift += list(_mean_shift(x, sick & ~affected, healthy & ~affected)[genes])
        control_shift += list(_mean_shift(x, sick & affected, healthy & affected)[control])
    assert np.median(affected_shift) > 3 * np.median(other_shift)
    assert np.median(affected_shift) > 3 * np.median(control_shift)


def test_technology_changes_library_size():
    adata = synthetic_atlas(1500, 200, seed=0)
    library = pd.Series(np.asarray(adata.X.sum(1)).ravel()).groupby(adata.obs["technology"].to_numpy()).median()
    assert library["Smart-seq2"] > 1.5 * library["10X"] > 2 * library["Drop-seq"]
    flat = synthetic_atlas(1500, 200, seed=0, batch_strength=0)
    library = pd.Series(np.asarray(flat.X.sum(1)).ravel()).groupby(flat.obs["technology"].to_numpy()).median()
    assert library.max() < 1.3 * library.min()


def test_classifier_finds_the_hierarchy_but_not_perfectly(atlas):
    from sklearn.linear_model import LogisticRegression

    x = _lognorm(atlas)
    train, test = np.arange(1000), np.arange(1000, atlas.n_obs)
    for key, floor, ceiling in (("coarse_cell_type", 0.9, 1.0), ("cell_type", 0.6, 0.98)):
        y = atlas.obs[key].astype(str).to_numpy()
        labels, counts = np.unique(y[train], return_counts=True)
        majority = np.mean(y[test] == labels[counts.argmax()])
        accuracy = LogisticRegression(max_iter=300).fit(x[train], y[train]).score(x[test], y[test])
        assert accuracy > max(floor, majority + 0.3), key
        assert accuracy <= ceiling, key


def test_many_categories_have_unique_names():
    adata = synthetic_atlas(200, 600, n_organs=14, n_regions_per_organ=4, n_coarse_types=12, n_fine_per_coarse=5)
    info = adata.uns["synthetic_atlas"]
    assert len(info["organ_regions"]) == 14
    assert len(adata.obs["region"].cat.categories) == 14 * 4
    assert len(info["hierarchy"]) == 12 * 5
    assert adata.obs["cell_type"].cat.categories.is_unique


def test_writes_h5ad(tmp_path):
    adata = synthetic_atlas(100, 200, n_diseases=0, n_organs=1)
    path = tmp_path / "atlas.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.X != adata.X).nnz == 0
    assert back.uns["synthetic_atlas"]["hierarchy"] == adata.uns["synthetic_atlas"]["hierarchy"]
    assert back.obs["disease"].cat.categories.tolist() == ["Healthy"]


def test_the_largest_seed_writes_to_h5ad(tmp_path):
    adata = synthetic_atlas(20, 200, seed=2**63 - 1)
    adata.write_h5ad(tmp_path / "atlas.h5ad")
    assert ad.read_h5ad(tmp_path / "atlas.h5ad").uns["synthetic_atlas"]["params"]["seed"] == 2**63 - 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "n_cells"),
        ({"n_cells": -3}, "n_cells"),
        ({"n_cells": 2.5}, "n_cells"),
        ({"n_genes": 0}, "n_genes"),
        ({"n_genes": 100}, r"n_genes.*too small.*>= 154"),
        ({"n_fine_per_coarse": 40}, "n_genes.*too small"),
        ({"n_organs": 0}, "n_organs"),
        ({"n_regions_per_organ": 0}, "n_regions_per_organ"),
        ({"n_coarse_types": 0}, "n_coarse_types"),
        ({"n_fine_per_coarse": -1}, "n_fine_per_coarse"),
        ({"n_technologies": 0}, "n_technologies"),
        ({"n_diseases": -1}, "n_diseases"),
        ({"n_coarse_markers": 0}, "n_coarse_markers"),
        ({"n_fine_markers": 0}, "n_fine_markers"),
        ({"marker_strength": -1.0}, "marker_strength"),
        ({"batch_strength": float("nan")}, "batch_strength"),
        ({"metadata_strength": -0.5}, "metadata_strength"),
        ({"library_size": 0}, "library_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**63}, r"`seed` must be at most 2\*\*63 - 1"),
        ({"seed": 2**64}, r"`seed` must be at most 2\*\*63 - 1"),
        ({"seed": 1.0}, "seed"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_atlas(**{"n_cells": 10, **kwargs})
