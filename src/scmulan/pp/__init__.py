"""Preprocessing: validate, log-normalise and match genes before using or training a model."""

from ._gene_table import GeneTable
from ._prepare import prepare

__all__ = ["GeneTable", "prepare"]
