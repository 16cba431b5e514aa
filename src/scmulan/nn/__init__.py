"""The c-sentence transformer (plain :mod:`torch`; no AnnData, no scvi-tools) and its batched cached decoding."""

from .config import PRESETS, TransformerConfig
from .decoding import GreedyOutput, greedy_decode, hierarchical_decode
from .model import CSentenceTransformer, KVCache
from .sampling import SampleOutput, sample_decode

__all__ = [
    "PRESETS",
    "CSentenceTransformer",
    "GreedyOutput",
    "KVCache",
    "SampleOutput",
    "TransformerConfig",
    "greedy_decode",
    "hierarchical_decode",
    "sample_decode",
]
