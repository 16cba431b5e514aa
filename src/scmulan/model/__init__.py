"""The scvi-tools model class :class:`~scmulan.SCMULAN` (imports torch, Lightning and scvi-tools)."""

from ._model import SCMULAN
from ._pretrained import load_pretrained, resolve_model

__all__ = ["SCMULAN", "load_pretrained", "resolve_model"]
