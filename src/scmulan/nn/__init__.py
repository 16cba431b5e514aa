"""The c-sentence transformer (plain :mod:`torch`; no AnnData, no scvi-tools) and its batched cached decoding."""

from .config import PRESETS, TransformerConfig
from .decoding import GreedyOutput, SampleOutput, greedy_decode, sample_decode
from .model import CSentenceTransformer, KVCache

__all__ = [
    "PRESETS",
    "CSentenceTransformer",
    "GreedyOutput",
    "KVCache",
    "SampleOutput",
    "TransformerConfig",
    "greedy_decode",
    "sample_decode",
]
