"""Checkpoint files: legacy scMulan import, the pretrained-model registry (pooch) and its cache."""

from ._legacy import LEGACY_KEY_MAP, config_from_model_args, load_legacy_checkpoint, map_legacy_state_dict
from ._registry import CACHE_ENV, PRETRAINED, RemoteFile, cache_dir, fetch_pretrained

__all__ = [
    "CACHE_ENV",
    "LEGACY_KEY_MAP",
    "PRETRAINED",
    "RemoteFile",
    "cache_dir",
    "config_from_model_args",
    "fetch_pretrained",
    "load_legacy_checkpoint",
    "map_legacy_state_dict",
]
