"""``TransformerConfig.generation_objective``: which models get the level head, and how old saves load."""

from __future__ import annotations

import pytest
import torch

from scmulan.nn import CSentenceTransformer, TransformerConfig


def test_scmulan_presets_use_next_and_the_released_network_keeps_set():
    for name in ("tiny", "small", "base"):
        assert TransformerConfig.from_preset(name, vocab_size=10).generation_objective == "next"
    assert TransformerConfig.from_preset("scmulan-v1").generation_objective == "set"
    assert TransformerConfig(vocab_size=10).generation_objective == "set"


def test_a_configuration_saved_before_the_field_loads_as_set():
    saved = TransformerConfig.from_preset("tiny", vocab_size=10).to_dict()
    assert TransformerConfig.from_dict(saved).generation_objective == "next"  # round trip
    del saved["generation_objective"]
    assert TransformerConfig.from_dict(saved).generation_objective == "set"


def test_only_next_networks_have_a_level_head_and_the_count_is_exact():
    nxt = CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=30))
    old = CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=30, generation_objective="set"))
    assert old.level_head is None
    assert nxt.num_parameters() == nxt.config.n_params()
    assert nxt.num_parameters() - old.num_parameters() == 2 * 64 * 64 + 64 + 64 * 10 + 10
    hidden = torch.randn(3, 64)
    assert nxt.level_logits(hidden, torch.tensor([1, 2, 3])).shape == (3, 10)
    with pytest.raises(AttributeError, match="no level head"):
        old.level_logits(hidden, torch.tensor([1, 2, 3]))


def test_an_unknown_objective_names_the_choices():
    with pytest.raises(ValueError, match="'next', 'set'"):
        TransformerConfig(vocab_size=10, generation_objective="autoregressive")
