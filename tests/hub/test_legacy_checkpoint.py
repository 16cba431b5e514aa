"""Import of the original checkpoint format: safe loading, name/shape checks, and vocabulary/checkpoint pairing."""

from __future__ import annotations

import re
import sys
import types

import pytest
import torch

import scmulan
from scmulan.hub import LEGACY_KEY_MAP, config_from_model_args, load_legacy_checkpoint, map_legacy_state_dict
from scmulan.nn import CSentenceTransformer, TransformerConfig

MODEL_ARGS = {
    "block_size": 1550,
    "vocab_size": 50,
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 32,
    "dropout": 0.0,
    "bias": False,
    "train_mode": "pretrain",
    "expression_level": 10,
    "ele": 1,
}


def to_legacy_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """scmulan names -> the original's (nanoGPT) names: the inverse of LEGACY_KEY_MAP."""
    inverse = [
        (re.compile("^" + re.escape(dst).replace(r"\{i\}", r"(\d+)") + "$"), src.replace("{i}", r"\1"))
        for src, dst in LEGACY_KEY_MAP.items()
    ]
    out = {}
    for key, tensor in state.items():
        for pattern, replacement in inverse:
            if pattern.match(key):
                out[pattern.sub(replacement, key)] = tensor
                break
        else:
            msg = f"no legacy name for {key}"
            raise AssertionError(msg)
    return out


def legacy_checkpoint(model_args=MODEL_ARGS, seed=0):
    """A checkpoint in the original format, from a random network of the same configuration."""
    torch.manual_seed(seed)
    net = CSentenceTransformer(config_from_model_args(model_args))
    return {"model": to_legacy_names(net.state_dict()), "model_args": dict(model_args)}, net


def test_round_trip_through_the_legacy_names(tmp_path):
    ckpt, net = legacy_checkpoint()
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    config, state = load_legacy_checkpoint(path)
    assert config == TransformerConfig(
        vocab_size=50, n_layer=2, n_head=4, n_embd=32, n_levels=11, bias=False, head_bias=False
    )
    assert set(state) == set(net.state_dict())
    for key, tensor in net.state_dict().items():
        assert torch.equal(state[key], tensor)


def test_wrapper_prefixes_and_the_causal_mask_buffer_are_accepted():
    ckpt, net = legacy_checkpoint()
    state = {f"_orig_mod.{k}": v for k, v in ckpt["model"].items()}
    state["_orig_mod.transformer.h.0.attn.bias"] = torch.ones(1, 1, 8, 8)  # nanoGPT's mask buffer
    mapped = map_legacy_state_dict(state, config_from_model_args(MODEL_ARGS))
    assert set(mapped) == set(net.state_dict())


def _make_pickle_module():
    """A module holding a class whose unpickling would run code (writing a marker file)."""
    module = types.ModuleType("scmulan_test_untrusted_pickle")

    def touch(path):
        with open(path, "w") as f:
            f.write("unpickled!")
        return path

    class Untrusted:
        def __init__(self, marker):
            self.marker = marker

        def __reduce__(self):
            return (touch, (self.marker,))

    touch.__module__ = Untrusted.__module__ = module.__name__
    touch.__qualname__, Untrusted.__qualname__ = "touch", "Untrusted"
    module.touch, module.Untrusted = touch, Untrusted
    return module


def test_a_file_that_needs_arbitrary_unpickling_is_rejected(tmp_path, monkeypatch):
    module = _make_pickle_module()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    marker = tmp_path / "marker.txt"
    ckpt, _ = legacy_checkpoint()
    ckpt["extra"] = module.Untrusted(str(marker))
    path = tmp_path / "evil.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="holds Python objects other than tensors") as info:
        load_legacy_checkpoint(path)
    assert str(info.value).startswith(str(path))
    assert "weights_only" not in str(info.value)  # never the advice that would run the code
    assert not marker.exists()  # nothing ran
    # the file really does run code when unpickled without restrictions (the test above is not vacuous)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        {"state_dict": {}, "model_args": MODEL_ARGS},
        {"model": {}},
        {"model_args": MODEL_ARGS},
        torch.zeros(3),
        [1, 2, 3],
    ],
)
def test_a_file_without_model_and_model_args_is_rejected(tmp_path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match="'model' and 'model_args'"):
        load_legacy_checkpoint(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=rf"{path} is not a file written by torch.save") as info:
        load_legacy_checkpoint(path)
    assert "weights_only" not in str(info.value)


def test_a_truncated_or_empty_checkpoint_names_the_file(tmp_path):
    ckpt, _ = legacy_checkpoint()
    path = tmp_path / "ckpt_scMulan.pt"
    torch.save(ckpt, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{path} is truncated .*Download the checkpoint .* again") as info:
        load_legacy_checkpoint(path)
    assert "weights_only" not in str(info.value)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{path} is empty"):
        load_legacy_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'none.pt'} does not exist"):
        load_legacy_checkpoint(tmp_path / "none.pt")


def _save_modified(tmp_path, edit, model_args=MODEL_ARGS):
    ckpt, _ = legacy_checkpoint(model_args)
    edit(ckpt)
    path = tmp_path / "modified.pt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["model"].__setitem__("lm_head.weight", torch.zeros(49, 32)), "entity_head.*shape"),
        (lambda c: c["model"].__setitem__("transformer.wee.weight", torch.zeros(11, 33)), "shape"),
        (lambda c: c["model"].pop("epx_head.weight"), "missing.*value_head"),
        (lambda c: c["model"].pop("transformer.h.1.mlp.c_fc.weight"), "missing.*blocks.1.mlp.fc"),
        (lambda c: c["model"].__setitem__("transformer.h.1.attn.c_attn.bias", torch.zeros(96)), "unexpected"),
        (lambda c: c["model"].__setitem__("transformer.wpe.weight", torch.zeros(8, 32)), "unrecognised.*wpe"),
        (lambda c: c["model_args"].__setitem__("n_layer", 3), "missing.*blocks.2"),
        (lambda c: c["model_args"].__setitem__("n_embd", 64), "shape"),
    ],
)
def test_mismatched_weights_are_rejected(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        load_legacy_checkpoint(_save_modified(tmp_path, edit))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["model_args"].pop("n_head"), "lack"),
        (lambda c: c["model_args"].__setitem__("ele", 2), "ele=2"),
    ],
)
def test_bad_model_args_are_rejected(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        load_legacy_checkpoint(_save_modified(tmp_path, edit))


def test_vocabulary_of_another_size_does_not_belong_to_the_checkpoint(tmp_path, legacy_dir):
    ckpt, _ = legacy_checkpoint({**MODEL_ARGS, "vocab_size": 2221})  # the legacy vocabulary has 2222 entities
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="do not belong together"):
        scmulan.SCMULAN.from_legacy_checkpoint(path, legacy_dir / "meta_info.pt")


def test_vocabulary_of_the_right_size_loads(tmp_path, legacy_dir):
    ckpt, net = legacy_checkpoint({**MODEL_ARGS, "vocab_size": 2222})
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    model = scmulan.SCMULAN.from_legacy_checkpoint(path, legacy_dir / "meta_info.pt")
    for key, tensor in net.state_dict().items():
        assert torch.equal(model.module.state_dict()[key], tensor)
    assert not model.module.training
