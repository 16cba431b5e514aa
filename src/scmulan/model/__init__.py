"""The scvi-tools model class :class:`~scmulan.SCMULAN` (imports torch, Lightning and scvi-tools)."""

from ._calibration import Calibration, calibrate
from ._generation import default_guidance, default_redraws
from ._model import SCMULAN
from ._parts import ModelParts
from ._pretrained import clear_pretrained_cache, load_pretrained, resolve_model
from ._reliability import expected_calibration_error, reliability_bins
from ._training_defaults import default_epochs, default_task_shares

__all__ = [
    "SCMULAN",
    "Calibration",
    "ModelParts",
    "calibrate",
    "clear_pretrained_cache",
    "default_epochs",
    "default_guidance",
    "default_redraws",
    "default_task_shares",
    "expected_calibration_error",
    "load_pretrained",
    "reliability_bins",
    "resolve_model",
]
