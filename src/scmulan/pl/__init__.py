"""Plotting of the outputs of :mod:`scmulan.tl`: UMAP of the embedding, confidence, confusion, generated cells."""

from ._confidence import confidence
from ._confusion import confusion
from ._confusion_matrix import confusion_matrix
from ._generated_vs_real import generated_vs_real
from ._perturbation import perturbation
from ._reliability import reliability
from ._umap import umap

__all__ = ["confidence", "confusion", "confusion_matrix", "generated_vs_real", "perturbation", "reliability", "umap"]
