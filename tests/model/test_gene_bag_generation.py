"""``SCMULAN(..., gene_bag="generation")``: the gene bag feeds generation only, annotation is the network's own."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch

import scmulan


@pytest.fixture(scope="module")
def bag_for_generation(reference, tmp_path_factory) -> scmulan.SCMULAN:
    model = scmulan.SCMULAN(reference, config="tiny", gene_bag="generation")
    model.train(max_epochs=1, batch_size=16, train_size=0.9, validation_size=0.1, enable_progress_bar=False)
    path = tmp_path_factory.mktemp("bag_generation") / "model"
    model.save(path)
    return scmulan.SCMULAN.load(path, adata=reference)


@contextlib.contextmanager
def _without_bag(model: scmulan.SCMULAN):
    """The model with its gene-bag table at zero, restored afterwards."""
    saved = model.module.gene_bag.weight.detach().clone()
    with torch.no_grad():
        model.module.gene_bag.weight.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            model.module.gene_bag.weight.copy_(saved)


def test_the_mode_is_saved_and_the_bag_is_trained(bag_for_generation):
    assert bag_for_generation.config.gene_bag == "generation"
    assert bool(bag_for_generation.module.gene_bag.weight.abs().sum() > 0)


def test_annotation_does_not_read_the_bag_and_generation_does(bag_for_generation, query):
    model = bag_for_generation
    condition = {"cell_type": model.vocab.categories("cell_type")[1]}
    with_bag = model.annotate(query, progress=False, calibrated=False)
    generated = model.generate(condition, n_cells=8, seed=3, progress=False, redraws=0)
    with _without_bag(model):
        without = model.annotate(query, progress=False, calibrated=False)
        generated_without = model.generate(condition, n_cells=8, seed=3, progress=False, redraws=0)
    pd.testing.assert_frame_equal(with_bag, without)
    assert (generated.layers["levels"] != generated_without.layers["levels"]).nnz > 0
    assert np.isfinite(generated.X.data).all()
