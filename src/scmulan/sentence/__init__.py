"""C-sentences: gene segments with per-cell levels, prompts for every task, training targets, batching, streaming.

Everything here works on sparse rows chunk by chunk with vectorised NumPy; nothing densifies a whole matrix and
nothing loops over cells or tokens in Python.
"""

from ._annbatch import AnnbatchSource
from ._assemble import END_GROUP, GENE_SET_GROUP, PROMPT_GROUP, Segment, Sentences, concat, prompts
from ._collate import length_batches, pad
from ._corpus import as_sources
from ._genes import GeneSegments, gene_segments, gene_token_ids, warn_truncated
from ._layout import SentenceLayout
from ._levels import expression_levels
from ._normalize import normalize_log1p
from ._packing import forward_heads, pack_batch, pack_layout, real_token_fraction
from ._ragged import offsets_from_lengths
from ._soma import SomaSource
from ._sources import CellSource, encode_metadata, normalize_rows
from ._tasks import ANNOTATION_FIELDS, TASK_TOKENS, TASKS, TaskSpec, sample_tasks, training_sentences

__all__ = [
    "ANNOTATION_FIELDS",
    "END_GROUP",
    "GENE_SET_GROUP",
    "PROMPT_GROUP",
    "TASKS",
    "TASK_TOKENS",
    "AnnbatchSource",
    "CellSource",
    "GeneSegments",
    "Segment",
    "SentenceLayout",
    "Sentences",
    "SomaSource",
    "TaskSpec",
    "TrainingSentenceDataset",
    "as_sources",
    "concat",
    "encode_metadata",
    "expression_levels",
    "forward_heads",
    "gene_segments",
    "gene_token_ids",
    "length_batches",
    "normalize_log1p",
    "normalize_rows",
    "offsets_from_lengths",
    "pack_batch",
    "pack_layout",
    "pad",
    "prompts",
    "real_token_fraction",
    "sample_tasks",
    "training_sentences",
    "warn_truncated",
]


def __getattr__(name: str):
    # The streaming dataset subclasses torch's IterableDataset: import torch only when it is asked for.
    if name == "TrainingSentenceDataset":
        from ._dataset import TrainingSentenceDataset

        return TrainingSentenceDataset
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
