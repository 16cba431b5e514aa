"""Conditional generation: seeding, gene prompts, the output AnnData, and bad conditions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def condition(trained) -> dict[str, str]:
    return {"organ": trained.vocab.categories("organ")[1], "cell_type": trained.vocab.categories("cell_type")[2]}


@pytest.fixture(scope="module")
def generated(trained, condition):
    return trained.generate(condition, n_cells=8, seed=5, progress=False)


def test_the_same_seed_gives_the_same_cells(trained, condition, generated):
    again = trained.generate(condition, n_cells=8, seed=5, progress=False)
    assert (again.X != generated.X).nnz == 0
    assert (again.layers["levels"] != generated.layers["levels"]).nnz == 0
    pd.testing.assert_frame_equal(again.obs, generated.obs)


def test_another_seed_gives_other_cells(trained, condition, generated):
    other = trained.generate(condition, n_cells=8, seed=6, progress=False)
    assert (other.layers["levels"] != generated.layers["levels"]).nnz > 0


def test_cells_list_each_gene_at_most_once_with_a_level(trained, generated):
    levels = generated.layers["levels"].tocsr()
    nnz = np.diff(levels.indptr)
    assert np.array_equal(generated.obs["n_genes"].to_numpy(), nnz)
    assert (nnz <= len(trained.vocab.genes)).all()
    assert (nnz > 0).all()
    # a gene emitted twice would show up as a summed level (or a summed value)
    assert np.isin(levels.data, np.arange(1, 11)).all()
    assert list(generated.var_names) == trained.vocab.genes


def test_obs_holds_the_conditions(trained, condition, generated):
    assert generated.n_obs == 8
    for field, category in condition.items():
        assert isinstance(generated.obs[field].dtype, pd.CategoricalDtype)
        assert (generated.obs[field] == category).all()
    assert generated.obs["ended"].dtype == bool


def test_one_condition_per_list_position(trained):
    organs = trained.vocab.categories("organ")[:2]
    out = trained.generate({"organ": organs}, n_cells=3, seed=0, progress=False)
    assert list(out.obs["organ"]) == [organs[0]] * 3 + [organs[1]] * 3


def test_x_is_on_the_scale_of_the_training_data(trained, reference, generated):
    X = generated.X.tocsr()
    assert X.data.min() >= 0
    assert X.data.max() <= reference.X.max() + 1e-6
    # expressed genes get a positive value exactly where a level was generated
    levels = generated.layers["levels"].tocsr()
    assert np.array_equal(X.indptr, levels.indptr)
    assert np.array_equal(X.indices, levels.indices)
    assert generated.uns["scmulan_generate"]["params"]["seed"] == 5


def test_a_gene_prompt_fixes_the_gene_level_in_every_cell(trained, condition):
    gene = trained.vocab.genes[3]
    out = trained.generate(condition, n_cells=6, seed=2, gene_prompts={gene: 7}, progress=False)
    column = out.layers["levels"][:, out.var_names.get_loc(gene)].toarray().ravel()
    assert np.array_equal(column, np.full(6, 7.0))
    assert np.array_equal(out.obs["n_genes"].to_numpy(), np.diff(out.layers["levels"].tocsr().indptr))


def test_level_zero_forbids_a_gene(trained, condition):
    free = trained.generate(condition, n_cells=6, seed=3, progress=False)
    counts = np.asarray((free.layers["levels"] > 0).sum(0)).ravel()
    gene = free.var_names[int(counts.argmax())]
    assert counts.max() > 0  # the gene is generated when allowed
    banned = trained.generate(condition, n_cells=6, seed=3, gene_prompts={gene: 0}, progress=False)
    assert banned.layers["levels"][:, banned.var_names.get_loc(gene)].nnz == 0


@pytest.mark.parametrize(
    ("prompts", "match"),
    [({"NOT_A_GENE": 3}, "not model genes"), ("level_11", "levels must be integers 0..10")],
)
def test_bad_gene_prompts_are_refused(trained, condition, prompts, match):
    if prompts == "level_11":
        prompts = {trained.vocab.genes[0]: 11}
    with pytest.raises(ValueError, match=match):
        trained.generate(condition, n_cells=1, gene_prompts=prompts, progress=False)


def test_an_unknown_category_lists_the_valid_ones(trained):
    with pytest.raises(ValueError, match="Unknown 'organ' categories") as info:
        trained.generate({"organ": "Moon"}, n_cells=1, progress=False)
    for organ in trained.vocab.categories("organ"):
        assert organ in str(info.value)


def test_an_unknown_field_is_refused(trained):
    with pytest.raises(ValueError, match="Unknown condition field 'planet'"):
        trained.generate({"planet": "Mars"}, n_cells=1, progress=False)


@pytest.mark.parametrize("n_cells", [0, -2, 2.5])
def test_n_cells_must_be_a_positive_integer(trained, condition, n_cells):
    with pytest.raises(ValueError, match="`n_cells` must be an integer >= 1"):
        trained.generate(condition, n_cells=n_cells, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k": 0}, "`top_k` must be None"),
        ({"top_k": -3}, "`top_k` must be None"),
        ({"gamma": -1.0}, "`gamma` .* must be >= 0"),
        ({"temperature": 0.0}, "`temperature` must be > 0"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
    ],
)
def test_bad_sampling_controls_are_refused_before_decoding(trained, condition, kwargs, match):
    with pytest.raises(ValueError, match=match):
        trained.generate(condition, n_cells=2, progress=False, **kwargs)


def test_conditions_must_hold_at_least_one_condition(trained, condition):
    field = next(iter(condition))
    with pytest.raises(ValueError, match="holds no condition"):
        trained.generate({field: []}, n_cells=2, progress=False)
    with pytest.raises(ValueError, match="holds no condition"):
        trained.generate(pd.DataFrame({field: []}), n_cells=2, progress=False)
    with pytest.raises(TypeError, match="`conditions` must be a mapping"):
        trained.generate("Lung", n_cells=2, progress=False)


def test_an_unknown_category_of_the_original_model_suggests_close_matches(legacy_dir):
    # The original vocabulary has 109 fine types (in id order "Cardiomyocyte cell" is the 93rd): the error suggests
    # the close matches of what was typed, then lists the valid ones alphabetically.
    import scmulan

    model = scmulan.SCMULAN.from_legacy_checkpoint(legacy_dir / "tiny_ckpt.pt", legacy_dir / "meta_info.pt")
    assert len(model.vocab.categories("cell_type")) == 109
    with pytest.raises(ValueError, match=r"Unknown 'cell_type' categories \['Cardiomyocyte'\]") as info:
        model.generate({"organ": "Heart", "cell_type": "Cardiomyocyte"}, n_cells=1, progress=False)
    text = str(info.value)
    assert "did you mean ['Cardiomyocyte cell'" in text
    assert "The model has 109 'cell_type' categories" in text
    assert "`model.vocab.categories('cell_type')`" in text
    valid = text[text.index("valid ones: ") + len("valid ones: ") :]
    assert valid.index("'Adipocyte") < valid.index("'Cardiomyocyte cell'") < valid.index("'Hepatocyte'")
    # several unknown ones get a suggestion each; the suggested spelling is accepted
    with pytest.raises(
        ValueError, match=r"\['Hepatocyte'.*for 'hepatocyte'; \['Cardiomyocyte cell'.*for 'Cardiomyocyte'"
    ):
        model.generate({"cell_type": ["hepatocyte", "Cardiomyocyte"]}, n_cells=1, progress=False)
    with pytest.warns(UserWarning, match="no de-binning table"):
        cells = model.generate(
            {"organ": "Heart", "cell_type": "Cardiomyocyte cell"}, n_cells=1, progress=False, max_length=8
        )
    assert cells.obs["cell_type"].tolist() == ["Cardiomyocyte cell"]


def test_the_original_model_warns_about_its_output_scale_until_it_has_a_debinning_table(legacy_dir):
    import warnings

    import anndata as ad

    import scmulan

    model = scmulan.SCMULAN.from_legacy_checkpoint(legacy_dir / "tiny_ckpt.pt", legacy_dir / "meta_info.pt")
    condition = {"organ": "Heart", "cell_type": "Cardiomyocyte cell"}
    with pytest.warns(UserWarning, match=r"level / 10.*`model.fit_debinning\(reference\)`"):
        raw = model.generate(condition, n_cells=4, max_length=40, progress=False)
    np.testing.assert_allclose(raw.X.data, raw.layers["levels"].data / 10)
    model.fit_debinning(ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cells = model.generate(condition, n_cells=4, max_length=40, progress=False)
    assert cells.uns["scmulan_generate"]["scale"] == "X: log-normalised (de-binned)"
    np.testing.assert_array_equal(cells.layers["levels"].toarray(), raw.layers["levels"].toarray())  # same seed


def test_next_entity_models_sample_with_their_own_stop_and_level_distribution(trained, generated):
    assert trained.config.generation_objective == "next"
    assert generated.uns["scmulan_generate"]["params"]["gamma"] == 1.0  # gamma=None: no correction of <E>
    explicit = trained.generate(generated.obs.iloc[:1][["organ", "cell_type"]], 8, seed=5, gamma=1.0, progress=False)
    assert (explicit.layers["levels"] != generated.layers["levels"]).nnz == 0
    assert generated.obs["ended"].all()  # the stop comes from the model, not from max_length
