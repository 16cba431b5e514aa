"""Inference allocates only the outputs asked for, batches by a token budget, and decodes in int8 on request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


def test_the_cpu_budget_shrinks_with_the_width_and_accelerators_keep_theirs():
    from scmulan.model._inference import ACCELERATOR_MAX_TOKENS, decoding_token_budget

    assert decoding_token_budget("cpu", 64) == 8192
    assert decoding_token_budget("cpu", 128) == 4096
    assert decoding_token_budget("cpu", 1120) == 468  # about one scMulan-v1 prompt per batch
    assert decoding_token_budget("cpu", 10**9) == 1  # never below one token: a batch still holds one cell
    assert decoding_token_budget("cuda", 64) == decoding_token_budget("cuda:1", 1120) == ACCELERATOR_MAX_TOKENS


def test_decoding_on_the_cpu_uses_its_budget_by_default(trained, source, monkeypatch):
    from scmulan.model import _inference

    seen = []
    batches = _inference.length_batches
    monkeypatch.setattr(
        _inference, "length_batches", lambda *a, **kw: seen.append(kw["max_tokens"]) or batches(*a, **kw)
    )
    cpu = torch.device("cpu")
    auto = _decode(trained, source, device=cpu)
    assert seen
    assert set(seen) == {_inference.decoding_token_budget(cpu, trained.config.n_embd)}
    wide = _decode(trained, source, device=cpu, max_tokens=None)
    assert np.array_equal(auto.tokens, wide.tokens)
