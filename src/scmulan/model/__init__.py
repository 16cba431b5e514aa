"""The scvi-tools model class :class:`~scmulan.SCMULAN` (imports torch, Lightning and scvi-tools)."""

from ._model import SCMULAN
from ._pretrained import clear_pretrained_cache, load_pretrained, resolve_model

__all__ = ["SCMULAN", "clear_pretrained_cache", "load_pretrained", "resolve_model"]
