"""Inference allocates only the outputs asked for, batches by a token budget, and decodes in int8 on request."""

from __future__ import annotations

import numpy as np
import pytest

from scmulan.model._inference import DecodingRecipe, decode_cells
from scmulan.sentence import CellSource


@pytest.fixture(scope="module")
def source(trained, query):
    return CellSource(query, trained.vocab, obs_keys=[])


def _decode(trained, source, embedding="first", **kwargs):
    allowed = [trained.vocab.field_mask("coarse_cell_type"), trained.vocab.field_mask("cell_type")]
    recipe = DecodingRecipe("annotation", 2, tuple(allowed), embedding=embedding)
    return decode_cells(trained.module, trained.vocab, source, recipe, layout=trained.layout, progress=False, **kwargs)


def test_only_the_embedding_asked_for_is_allocated(trained, source):
    none = _decode(trained, source, embedding=None)
    assert none.embedding is None
    first = _decode(trained, source, embedding="first")
    assert first.embedding.shape == (source.n_obs, trained.config.n_embd)
    legacy = _decode(trained, source, embedding="legacy")
    assert legacy.embedding.shape == first.embedding.shape
    assert np.array_equal(none.tokens, first.tokens)
    with pytest.raises(ValueError, match="'first', 'legacy' or None"):
        _decode(trained, source, embedding="mean")


def test_a_token_budget_changes_the_batches_not_the_outputs(trained, source):
    cells = _decode(trained, source, batch_size=64, max_tokens=None)
    budget = _decode(trained, source, batch_size=64, max_tokens=200)  # a handful of cells per batch
    assert np.array_equal(budget.tokens, cells.tokens)
    np.testing.assert_allclose(budget.probs, cells.probs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(budget.embedding, cells.embedding, atol=1e-5, rtol=0)


def test_int8_decoding_agrees_with_fp32(trained, query):
    fp32 = trained.annotate(query, progress=False, calibrated=False)
    int8 = trained.annotate(query, progress=False, calibrated=False, quantize=True)
    agreement = float((fp32["fine"].astype(str) == int8["fine"].astype(str)).mean())
    assert agreement >= 0.95  # a barely trained model has near-ties; the benchmark reports the figure at scale
    np.testing.assert_allclose(int8["confidence"], fp32["confidence"], atol=0.1)
    assert all(type(m).__name__ == "Linear" for m in trained.module.modules() if "Linear" in type(m).__name__)
