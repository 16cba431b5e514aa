"""Checkpoint files: legacy scMulan import, safetensors weights, the pretrained-model registry."""

from ._legacy import LEGACY_KEY_MAP, config_from_model_args, load_legacy_checkpoint, map_legacy_state_dict

__all__ = ["LEGACY_KEY_MAP", "config_from_model_args", "load_legacy_checkpoint", "map_legacy_state_dict"]
