"""Checkpoint files: legacy scMulan import, the pretrained-model registry (pooch) and its cache, the Hugging Face Hub."""

from ._huggingface import download_from_hub, push_to_hub, save_for_hub
from ._legacy import LEGACY_KEY_MAP, config_from_model_args, load_legacy_checkpoint, map_legacy_state_dict
from ._model_card import model_card
from ._registry import CACHE_ENV, PRETRAINED, RemoteFile, cache_dir, fetch_pretrained

__all__ = [
    "CACHE_ENV",
    "LEGACY_KEY_MAP",
    "PRETRAINED",
    "RemoteFile",
    "cache_dir",
    "config_from_model_args",
    "download_from_hub",
    "fetch_pretrained",
    "load_legacy_checkpoint",
    "map_legacy_state_dict",
    "model_card",
    "push_to_hub",
    "save_for_hub",
]
