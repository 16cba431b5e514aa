"""Generation defaults of next-entity models: gene counts drawn from real cells, classifier-free guidance, top-p."""

from __future__ import annotations

import numpy as np
import pytest

import scmulan
from scmulan.model._gene_counts import (
    N_QUANTILES,
    draw_gene_counts,
    expressed_genes,
    extend_gene_count_table,
    gene_count_table,
)


@pytest.fixture(scope="module")
def fine_type(trained) -> str:
    return trained.vocab.categories("cell_type")[1]


def training_counts(trained, reference, fine_type: str) -> np.ndarray:
    """Gene counts (model genes) of the training cells of one fine type."""
    cells = reference[trained.train_indices_]
    cells = cells[(cells.obs["cell_type"] == fine_type).to_numpy()]
    return np.asarray((cells[:, trained.vocab.genes].X > 0).sum(1)).ravel()


# ------------------------------------------------------------------------------------------ the table itself
def test_the_table_keeps_counts_per_token_and_draws_from_the_narrowest_condition():
    counts = np.array([10, 10, 10, 50, 50, 30])
    # field 0: organ token 2 for every cell; field 1: type token 5 (first three), 6 (next two), unknown (last)
    metadata = np.array([[2, 5], [2, 5], [2, 5], [2, 6], [2, 6], [2, -1]])
    table = gene_count_table(counts, metadata, n_tokens=8)
    assert table.shape == (9, 1 + N_QUANTILES)
    assert table[0, 0] == 6
    assert table[1 + 2, 0] == 6
    assert table[1 + 5, 0] == 3
    assert table[1 + 6, 0] == 2
    assert table[1 + 7, 0] == 0
    rng = np.random.default_rng(0)
    drawn = draw_gene_counts(table, np.array([[2, 5]] * 50 + [[2, 6]] * 50 + [[-1, 7]] * 50), rng)
    assert (drawn[:50] == 10).all()  # the fine type (3 cells), not the organ (6 cells)
    assert (drawn[50:100] == 50).all()
    # a token never seen in training, and no condition at all: every training cell's distribution
    assert drawn[100:].min() >= 10
    assert drawn[100:].max() <= 50
    assert len(np.unique(drawn[100:])) > 3
    assert (draw_gene_counts(table, np.zeros((4, 0), dtype=np.int64), rng) >= 10).all()


def test_draws_follow_the_distribution_of_the_training_cells():
    counts = np.random.default_rng(1).integers(100, 400, size=2000)
    table = gene_count_table(counts, np.zeros((2000, 1), dtype=np.int64), n_tokens=1)
    drawn = draw_gene_counts(table, np.zeros((5000, 1), dtype=np.int64), np.random.default_rng(2))
    assert abs(drawn.mean() - counts.mean()) < 5
    assert abs(drawn.std() - counts.std()) < 5
    assert drawn.min() >= counts.min()
    assert drawn.max() <= counts.max()


def test_an_empty_table_leaves_the_stop_to_the_model_and_new_tokens_get_empty_rows():
    table = gene_count_table(np.array([], dtype=np.int64), np.zeros((0, 2), dtype=np.int64), n_tokens=3)
    assert (draw_gene_counts(table, np.array([[0, 1]]), np.random.default_rng(0)) == -1).all()
    grown = extend_gene_count_table(np.ones((4, 1 + N_QUANTILES), dtype=np.float32), 6)
    assert grown.shape == (7, 1 + N_QUANTILES)
    assert (grown[4:] == 0).all()
    assert (grown[:4] == 1).all()
    assert extend_gene_count_table(None, 6) is None


def test_expressed_genes_counts_only_model_genes_with_a_positive_value():
    from scipy import sparse

    X = sparse.csr_matrix(np.array([[1.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]]))
    assert expressed_genes(X, np.array([0, 1, -1, 2])).tolist() == [2, 1]


# ------------------------------------------------------------------------------------------ generate
def test_training_records_gene_counts_and_generated_cells_get_counts_of_their_type(trained, reference, fine_type):
    assert trained.gene_counts_ is not None
    real = training_counts(trained, reference, fine_type)
    out = trained.generate({"cell_type": fine_type}, n_cells=40, seed=0, progress=False)
    params = out.uns["scmulan_generate"]["params"]
    assert params["gene_counts"] == "reference"
    n_genes = out.obs["n_genes"].to_numpy()
    assert n_genes.min() >= real.min()
    assert n_genes.max() <= real.max()
    assert out.obs["ended"].all()


def test_the_model_stop_remains_available(trained, fine_type):
    own = trained.generate({"cell_type": fine_type}, 20, seed=0, gene_counts="model", guidance=1.0, progress=False)
    drawn = trained.generate({"cell_type": fine_type}, 20, seed=0, guidance=1.0, progress=False)
    assert own.uns["scmulan_generate"]["params"]["gene_counts"] == "model"
    assert not np.array_equal(own.obs["n_genes"].to_numpy(), drawn.obs["n_genes"].to_numpy())


def test_guidance_is_on_by_default_for_a_condition_and_changes_the_cells(trained, fine_type):
    guided = trained.generate({"cell_type": fine_type}, 10, seed=0, progress=False)
    # the shared model has a gene bag: 1.75 (1.5 without one; scmulan.model.default_guidance)
    assert guided.uns["scmulan_generate"]["params"]["guidance"] == 1.75
    assert scmulan.model.default_guidance(trained.module.config) == 1.75
    assert scmulan.model.default_guidance(scmulan.nn.TransformerConfig(vocab_size=10, gene_bag=False)) == 1.5
    plain = trained.generate({"cell_type": fine_type}, 10, seed=0, guidance=1.0, progress=False)
    assert (guided.layers["levels"] != plain.layers["levels"]).nnz > 0
    # the same number of genes per cell either way: guidance changes which genes, not how many
    assert np.array_equal(guided.obs["n_genes"].to_numpy(), plain.obs["n_genes"].to_numpy())
    unconditional = trained.generate(None, 3, seed=0, progress=False)
    assert unconditional.uns["scmulan_generate"]["params"]["guidance"] == 1.0  # nothing to guide towards


def test_level_guidance_changes_the_levels_not_the_genes_and_guidance_steps_the_genes(trained, fine_type):
    common = {"n_cells": 10, "seed": 0, "progress": False}
    plain = trained.generate({"cell_type": fine_type}, **common)
    guided = trained.generate({"cell_type": fine_type}, level_guidance=2.0, **common)
    params = guided.uns["scmulan_generate"]["params"]
    assert params["level_guidance"] == 2.0
    assert params["guidance_steps"] == -1  # every gene
    assert (guided.layers["levels"] != plain.layers["levels"]).nnz > 0
    # as many genes per cell either way (drawn from the reference's gene counts)
    assert np.array_equal(guided.obs["n_genes"].to_numpy(), plain.obs["n_genes"].to_numpy())
    early = trained.generate({"cell_type": fine_type}, guidance_steps=0, **common)
    unguided = trained.generate({"cell_type": fine_type}, guidance=1.0, **common)
    assert (early.layers["levels"] != unguided.layers["levels"]).nnz == 0  # guided at no draw: as without guidance
    assert early.uns["scmulan_generate"]["params"]["guidance_steps"] == 0


def test_top_p_filters_and_is_recorded(trained, fine_type):
    narrow = trained.generate({"cell_type": fine_type}, 10, seed=0, top_p=0.05, progress=False)
    wide = trained.generate({"cell_type": fine_type}, 10, seed=0, progress=False)
    assert narrow.uns["scmulan_generate"]["params"]["top_p"] == 0.05
    assert (narrow.layers["levels"] != wide.layers["levels"]).nnz > 0


def test_gene_prompts_count_towards_the_drawn_gene_count(trained, fine_type):
    gene = trained.vocab.genes[0]
    common = {"n_cells": 12, "seed": 4, "progress": False, "guidance": 1.0, "redraws": 0}
    held = trained.generate({"cell_type": fine_type}, gene_prompts={gene: 9}, **common)
    free = trained.generate({"cell_type": fine_type}, **common)
    assert np.array_equal(held.obs["n_genes"].to_numpy(), np.maximum(free.obs["n_genes"].to_numpy(), 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gene_counts": "real"}, "`gene_counts` must be 'reference', 'model' or None"),
        ({"guidance": -1.0}, r"`guidance` must be a number >= 0"),
        ({"top_p": 0.0}, r"`top_p` must be None \(no filtering\) or a number in \(0, 1\]"),
        ({"legacy": True, "gene_counts": "reference"}, "use gene_counts='model'"),
        ({"legacy": True, "guidance": 2.0}, "use guidance=1"),
        ({"level_guidance": -0.5}, r"`level_guidance` must be a number >= 0"),
        ({"legacy": True, "level_guidance": 2.0}, "use level_guidance=1"),
        ({"guidance_steps": -1}, r"`guidance_steps` must be an integer >= 0"),
        ({"guidance_steps": 2.5}, r"`guidance_steps` must be an integer >= 0"),
    ],
)
def test_bad_generation_options_are_refused_with_the_fix(trained, fine_type, kwargs, match):
    with pytest.raises(ValueError, match=match):
        trained.generate({"cell_type": fine_type}, 2, progress=False, **kwargs)


def test_a_model_without_gene_counts_uses_its_own_stop_and_says_how_to_get_them(saved_dir, reference, fine_type):
    model = scmulan.SCMULAN.load(saved_dir, adata=reference)
    assert model.gene_counts_ is not None  # saved and loaded with the model
    model.gene_counts_ = None  # as a model saved before gene counts were recorded
    out = model.generate({"cell_type": fine_type}, 3, seed=0, progress=False)
    assert out.uns["scmulan_generate"]["params"]["gene_counts"] == "model"
    with pytest.raises(ValueError, match="recorded no gene counts.*gene_counts='model'"):
        model.generate({"cell_type": fine_type}, 3, gene_counts="reference", progress=False)


def test_saved_and_loaded_models_generate_the_same_cells(trained, saved_dir, reference, fine_type):
    loaded = scmulan.SCMULAN.load(saved_dir, adata=reference)
    np.testing.assert_array_equal(loaded.gene_counts_, trained.gene_counts_)
    a = trained.generate({"cell_type": fine_type}, 6, seed=1, progress=False)
    b = loaded.generate({"cell_type": fine_type}, 6, seed=1, progress=False)
    assert (a.layers["levels"] != b.layers["levels"]).nnz == 0
