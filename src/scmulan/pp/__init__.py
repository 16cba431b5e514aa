"""Preprocessing: validate, log-normalise and match genes before using or training a model."""

from ._prepare import prepare

__all__ = ["prepare"]
