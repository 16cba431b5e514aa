"""TransformerConfig: presets, the exact parameter count, (de)serialisation and validation."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.nn import PRESETS, CSentenceTransformer, TransformerConfig

# The released scMulan checkpoint (DESIGN.md §4; 24 layers, 20 heads, width 1120, |V| = 2222, no biases).
SCMULAN_V1_PARAMS = 368_800_320


def _count_on_meta(config: TransformerConfig) -> int:
    """Build the network on the meta device (no memory, no data) and count its parameters."""
    with torch.device("meta"):
        net = CSentenceTransformer(config)
    assert all(p.is_meta for p in net.parameters())
    return sum(p.numel() for p in net.parameters())


def test_scmulan_v1_has_the_released_parameter_count():
    config = TransformerConfig.from_preset("scmulan-v1")
    assert (config.n_layer, config.n_head, config.n_embd, config.vocab_size) == (24, 20, 1120, 2222)
    assert not config.bias
    assert not getattr(config, "head_bias", False)  # the released checkpoint has no biases at all
    assert _count_on_meta(config) == SCMULAN_V1_PARAMS
    assert config.n_params() == SCMULAN_V1_PARAMS


@settings(max_examples=25, deadline=None)
@given(
    n_layer=st.integers(1, 4),
    n_head=st.sampled_from([1, 2, 4]),
    head_dim=st.integers(1, 8),
    vocab_size=st.integers(1, 300),
    n_levels=st.integers(1, 12),
    bias=st.booleans(),
    head_bias=st.booleans(),
)
def test_n_params_is_exact_for_any_configuration(n_layer, n_head, head_dim, vocab_size, n_levels, bias, head_bias):
    config = TransformerConfig(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_head * head_dim,
        n_levels=n_levels,
        bias=bias,
        head_bias=head_bias,
    )
    assert config.n_params() == _count_on_meta(config)


def test_num_parameters_of_a_real_network_matches_n_params():
    config = TransformerConfig.from_preset("tiny", vocab_size=50, bias=True)
    net = CSentenceTransformer(config)
    assert net.num_parameters() == config.n_params() == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_round_trip(name):
    config = TransformerConfig.from_preset(name, vocab_size=None if name == "scmulan-v1" else 123)
    for key, value in PRESETS[name].items():
        assert getattr(config, key) == value
    again = TransformerConfig.from_dict(config.to_dict())
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_preset_overrides_and_vocab_size():
    config = TransformerConfig.from_preset("small", vocab_size=77, dropout=0.1, bias=True)
    assert (config.vocab_size, config.dropout, config.bias) == (77, 0.1, True)
    assert (config.n_layer, config.n_head, config.n_embd) == (
        PRESETS["small"]["n_layer"],
        PRESETS["small"]["n_head"],
        PRESETS["small"]["n_embd"],
    )
    # a vocabulary size given explicitly wins over the preset's
    assert TransformerConfig.from_preset("scmulan-v1", vocab_size=100).vocab_size == 100


def test_from_dict_round_trip_of_a_custom_configuration():
    config = TransformerConfig(
        vocab_size=9, n_layer=3, n_head=3, n_embd=12, n_levels=5, bias=True, head_bias=False, dropout=0.25
    )
    d = config.to_dict()
    expected = {"vocab_size": 9, "n_layer": 3, "n_head": 3, "n_embd": 12, "n_levels": 5, "bias": True, "dropout": 0.25}
    assert {k: d[k] for k in expected} == expected
    assert d["head_bias"] is False
    assert json.loads(json.dumps(d)) == d  # JSON-serialisable
    assert TransformerConfig.from_dict(json.loads(json.dumps(d))) == config
    for changed in ({"head_bias": True}, {"n_levels": 11}, {"dropout": 0.0}):
        assert TransformerConfig.from_dict({**d, **changed}) != config


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: TransformerConfig.from_preset("huge", vocab_size=10), "Unknown configuration"),
        (lambda: TransformerConfig.from_preset("tiny"), "needs `vocab_size`"),
        (
            lambda: TransformerConfig.from_preset("tiny", vocab_size=10, n_layr=3),
            r"fields \['n_layr'\]; known: .*n_layer",
        ),
        (lambda: TransformerConfig.from_dict({"vocab_size": 10, "n_layers": 2}), "Unknown configuration keys"),
        (lambda: TransformerConfig(vocab_size=0), "vocab_size"),
        (lambda: TransformerConfig(vocab_size=10, n_layer=0), "n_layer"),
        (lambda: TransformerConfig(vocab_size=10, n_head=-1), "n_head"),
        (lambda: TransformerConfig(vocab_size=10, n_levels=0), "n_levels"),
        (lambda: TransformerConfig(vocab_size=10, n_head=3, n_embd=64), "divisible"),
        (lambda: TransformerConfig(vocab_size=10, dropout=1.0), "dropout"),
        (lambda: TransformerConfig(vocab_size=10, dropout=-0.1), "dropout"),
    ],
)
def test_bad_configurations_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
