"""Import of the original scMulan checkpoint format (``{"model": state_dict, "model_args": {...}}``)."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from scmulan.nn.config import TransformerConfig

logger = logging.getLogger(__name__)

# Original state-dict key (nanoGPT names) -> key in scmulan.nn.CSentenceTransformer. `{i}` is the block index.
LEGACY_KEY_MAP: dict[str, str] = {
    "transformer.wte.weight": "entity_embedding.weight",
    "transformer.wee.weight": "value_embedding.weight",
    "transformer.h.{i}.ln_1.weight": "blocks.{i}.ln_1.weight",
    "transformer.h.{i}.ln_1.bias": "blocks.{i}.ln_1.bias",
    "transformer.h.{i}.attn.c_attn.weight": "blocks.{i}.attn.qkv.weight",
    "transformer.h.{i}.attn.c_attn.bias": "blocks.{i}.attn.qkv.bias",
    "transformer.h.{i}.attn.c_proj.weight": "blocks.{i}.attn.proj.weight",
    "transformer.h.{i}.attn.c_proj.bias": "blocks.{i}.attn.proj.bias",
    "transformer.h.{i}.ln_2.weight": "blocks.{i}.ln_2.weight",
    "transformer.h.{i}.ln_2.bias": "blocks.{i}.ln_2.bias",
    "transformer.h.{i}.mlp.c_fc.weight": "blocks.{i}.mlp.fc.weight",
    "transformer.h.{i}.mlp.c_fc.bias": "blocks.{i}.mlp.fc.bias",
    "transformer.h.{i}.mlp.c_proj.weight": "blocks.{i}.mlp.proj.weight",
    "transformer.h.{i}.mlp.c_proj.bias": "blocks.{i}.mlp.proj.bias",
    "transformer.ln_f.weight": "ln_f.weight",
    "transformer.ln_f.bias": "ln_f.bias",
    "lm_head.weight": "entity_head.weight",
    "epx_head.weight": "value_head.weight",
}
# `model_args` keys that do not change the network at inference (tolerated and ignored).
_IGNORED_ARGS = {"block_size", "train_mode", "beta"}
_PREFIXES = ("_orig_mod.", "module.")  # torch.compile / DistributedDataParallel wrappers
_REDOWNLOAD = "Download the checkpoint (ckpt_scMulan.pt) again, or pass the path of a complete copy."


def _compile_key_map() -> list[tuple[re.Pattern[str], str]]:
    return [
        (re.compile("^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + "$"), dst.replace("{i}", r"\1"))
        for src, dst in LEGACY_KEY_MAP.items()
    ]


def config_from_model_args(model_args: dict[str, Any]) -> TransformerConfig:
    """Translate the original ``model_args`` into a :class:`~scmulan.nn.TransformerConfig`.

    Parameters
    ----------
    model_args
        The checkpoint's ``model_args`` (``vocab_size``, ``n_layer``, ``n_head``, ``n_embd``, ``dropout``, ``bias``,
        ``expression_level``, ``ele``; ``block_size``/``train_mode`` are ignored: there is no positional embedding).
    """
    args = dict(model_args)
    ele = args.pop("ele", 1)
    if ele != 1:
        msg = (
            f"This checkpoint uses value-encoding mode `ele={ele}`; only the released mode 1 "
            "(a learned embedding of expression levels) is supported."
        )
        raise ValueError(msg)
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if k not in args]
    if missing:
        msg = f"The checkpoint's `model_args` lack {missing}; is this an original scMulan checkpoint?"
        raise ValueError(msg)
    extra = set(args) - _IGNORED_ARGS - {"vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias"}
    extra.discard("expression_level")
    if extra:
        logger.info("ignoring unknown legacy model_args %s", sorted(extra))
    return TransformerConfig(
        vocab_size=int(args["vocab_size"]),
        n_layer=int(args["n_layer"]),
        n_head=int(args["n_head"]),
        n_embd=int(args["n_embd"]),
        n_levels=int(args.get("expression_level", 10)) + 1,
        bias=bool(args.get("bias", False)),
        head_bias=False,
        dropout=float(args.get("dropout", 0.0)),
        generation_objective="set",  # the original's unordered gene set: no level head, gamma-controlled stop
    )


def map_legacy_state_dict(state_dict: dict[str, Any], config: TransformerConfig) -> dict[str, Any]:
    """Rename the original weights to scmulan's names and check every name and shape.

    Parameters
    ----------
    state_dict
        The checkpoint's ``model`` entry.
    config
        The configuration the weights must fit.

    Returns
    -------
    A state dict for :class:`~scmulan.nn.CSentenceTransformer` (strictly complete).
    """
    import torch

    from scmulan.nn.model import CSentenceTransformer

    with torch.device("meta"):
        expected = CSentenceTransformer(config).state_dict()
    patterns = _compile_key_map()
    mapped: dict[str, Any] = {}
    unknown = []
    for key, tensor in state_dict.items():
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        if key.endswith(".attn.bias") and getattr(tensor, "ndim", 0) == 4:
            continue  # nanoGPT's causal-mask buffer (slow-attention fallback), not a parameter
        for pattern, replacement in patterns:
            if pattern.match(key):
                mapped[pattern.sub(replacement, key)] = tensor
                break
        else:
            unknown.append(key)
    missing = sorted(set(expected) - set(mapped))
    surplus = sorted(set(mapped) - set(expected))
    if unknown or missing or surplus:
        msg = (
            "The checkpoint's weights do not match its `model_args`: "
            f"unrecognised keys {unknown[:5]}, missing {missing[:5]}, unexpected {surplus[:5]}."
        )
        raise ValueError(msg)
    for key, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            msg = (
                f"Weight {key!r} has shape {tuple(tensor.shape)}, the configuration needs {tuple(expected[key].shape)}."
            )
            raise ValueError(msg)
    return mapped


def load_legacy_checkpoint(path: str | os.PathLike) -> tuple[TransformerConfig, dict[str, Any]]:
    """Read an original scMulan checkpoint without executing pickled code.

    The file is opened with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.

    Parameters
    ----------
    path
        The ``.pt`` file (e.g. ``ckpt_scMulan.pt``).

    Returns
    -------
    The configuration read from ``model_args`` and the weights under scmulan's names (CPU tensors, fp32 as stored).
    """
    from scmulan._files import torch_load_plain

    # empty, truncated, another format or holding code: a DamagedFileError naming the file (never weights_only=False)
    ckpt = torch_load_plain(path, what="an original scMulan checkpoint", fix=_REDOWNLOAD)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        msg = (
            f"{os.fspath(path)} is not an original scMulan checkpoint: expected keys 'model' and 'model_args', got "
            f"{keys}. {_REDOWNLOAD}"
        )
        raise ValueError(msg)
    config = config_from_model_args(ckpt["model_args"])
    return config, map_legacy_state_dict(ckpt["model"], config)
