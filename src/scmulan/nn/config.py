"""Configuration of the c-sentence transformer and its named sizes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

GENERATION_OBJECTIVES = ("next", "set")

# name -> sizes. Parameter counts are for the vocabulary size in brackets (they scale with |V| through the
# entity embedding, the two heads and, where it is on, the gene bag).
# scmulan's own sizes train with dropout 0.1: on PBMC (560 training cells, `tiny`, 30 epochs, 2 splits) it raised the
# fine macro-F1 of the default multitask recipe from 0.571 to 0.680 with the generation loss within 0.5 %
# (benchmarks/annotation_ablation.py, README "Annotation ablation").
# The gene bag (a linear path from the gene levels to the heads) is off in every preset: with `small` it raised PBMC
# fine macro-F1 from 0.656 to 0.698 (5 splits) but lowered the atlas's from 0.868 to 0.745 (3 splits; also without
# its technology effects, 0.837 to 0.748 on one split), and with `tiny` the atlas's from 0.849 to 0.785 (5 splits)
# (README "Gene bag").
_OWN = {"dropout": 0.1, "generation_objective": "next"}
PRESETS: dict[str, dict[str, Any]] = {
    # tests and CI: ~0.1M parameters + 3 * |V| * 64
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, **_OWN},
    # CPU training and fine-tuning (the benchmarks' size): ~0.8M + 4 * |V| * 128
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128, **_OWN},
    # a GPU pretraining size: ~85M + 4 * |V| * 768
    "base": {"n_layer": 12, "n_head": 12, "n_embd": 768, **_OWN},
    # the released scMulan checkpoint: 368,800,320 parameters with |V| = 2222 (read from its `model_args`;
    # the paper text says 20 blocks, the checkpoint has 24)
    "scmulan-v1": {
        "n_layer": 24,
        "n_head": 20,
        "n_embd": 1120,
        "vocab_size": 2222,
        "bias": False,
        "head_bias": False,
        "generation_objective": "set",
    },
}


@dataclass
class TransformerConfig:
    """Sizes of the decoder-only c-sentence transformer.

    Parameters
    ----------
    vocab_size
        Number of entities (rows of the entity embedding, columns of both heads).
    n_layer
        Number of transformer blocks.
    n_head
        Attention heads per block; must divide ``n_embd``.
    n_embd
        Width of the residual stream.
    n_levels
        Rows of the value (expression level) embedding: levels 0..10 give 11.
    bias
        Biases in the linear layers and LayerNorms (the released scMulan has none).
    head_bias
        A bias on the entity head, initialised to the log-odds of one entity among ``vocab_size``. With a sum of
        per-entity sigmoids over the whole vocabulary, nearly every target is 0: the bias lets the network start
        from "everything is unlikely" instead of learning that through its hidden states. The released scMulan has
        none (``False`` in the ``"scmulan-v1"`` preset and for imported checkpoints).
    dropout
        Dropout on embeddings, attention and residual branches during training (0.1 in the ``"tiny"``, ``"small"``
        and ``"base"`` presets, 0 for the original checkpoint; no effect at inference).
    generation_objective
        How the generation task is learnt and sampled. ``"next"`` (scmulan's own presets ``"tiny"``, ``"small"`` and
        ``"base"``, so every new :class:`~scmulan.SCMULAN`): generation sentences list the genes
        from the most to the least expressed, the entity head is trained with a softmax over the genes not yet
        emitted plus ``<E>`` (next-entity likelihood, so the stop is calibrated) and a level head (levels 1..10,
        cross-entropy, conditioned on the hidden state and the chosen gene) gives each gene's level, sampled at
        generation time. ``"set"``: the original scMulan's unordered gene set (per-entity sigmoids, value
        regression); the default here, the ``"scmulan-v1"`` preset, the imported checkpoint and models saved before
        this field existed use it.
    gene_bag
        Add to the final hidden state a linear summary of the genes seen so far: ``sum_g level_g * W[g] / sqrt(n)``
        over the ``n`` gene tokens up to each position, with a learnt ``(vocab_size, n_embd)`` table ``W`` that
        starts at zero. Through the heads this adds a logistic regression on the expression levels to the label
        logits (a wide-and-deep network). ``False`` in every preset (it helped PBMC and hurt the synthetic atlas, with
        or without its technology effects: see the annotation guide), for the original checkpoint and for models
        saved before this field existed.
    """

    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_levels: int = 11
    bias: bool = False
    head_bias: bool = True
    dropout: float = 0.0
    generation_objective: str = "set"
    gene_bag: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "n_levels"):
            if getattr(self, name) < 1:
                msg = f"`{name}` must be a positive integer, got {getattr(self, name)!r}."
                raise ValueError(msg)
        if self.n_embd % self.n_head:
            msg = f"`n_embd` ({self.n_embd}) must be divisible by `n_head` ({self.n_head})."
            raise ValueError(msg)
        if not 0.0 <= self.dropout < 1.0:
            msg = f"`dropout` must be in [0, 1), got {self.dropout}."
            raise ValueError(msg)
        if self.generation_objective not in GENERATION_OBJECTIVES:
            msg = f"`generation_objective` must be one of {GENERATION_OBJECTIVES}, got {self.generation_objective!r}."
            raise ValueError(msg)

    @classmethod
    def from_preset(cls, name: str, vocab_size: int | None = None, **overrides: Any) -> TransformerConfig:
        """Build a configuration from a named size.

        Parameters
        ----------
        name
            One of ``"tiny"``, ``"small"``, ``"base"``, ``"scmulan-v1"``.
        vocab_size
            Vocabulary size; required unless the preset fixes it (``"scmulan-v1"``).
        **overrides
            Any field of :class:`TransformerConfig` to change.
        """
        if name not in PRESETS:
            msg = f"Unknown configuration {name!r}; choose one of {sorted(PRESETS)}."
            raise ValueError(msg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            msg = f"Unknown configuration fields {sorted(unknown)}; known: {sorted(known)}."
            raise ValueError(msg)
        fields = dict(PRESETS[name])
        if vocab_size is not None:
            fields["vocab_size"] = vocab_size
        fields.update(overrides)
        if "vocab_size" not in fields:
            msg = f"Preset {name!r} needs `vocab_size`."
            raise ValueError(msg)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dictionary (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise; without ``generation_objective`` (saved before it existed) ``"set"``."""
        d = {"generation_objective": "set", **d}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            msg = f"Unknown configuration keys {sorted(unknown)}; known: {sorted(known)}."
            raise ValueError(msg)
        return cls(**d)

    def n_params(self) -> int:
        """Exact parameter count of :class:`~scmulan.nn.CSentenceTransformer` with this configuration."""
        d, v = self.n_embd, self.vocab_size
        ln = d * (2 if self.bias else 1)
        linear_bias = (3 * d + d + 4 * d + d) if self.bias else 0
        block = 12 * d * d + 2 * ln + linear_bias
        level_head = 0
        if self.generation_objective == "next":  # Linear(2d, d) + GELU + Linear(d, levels 1..n_levels-1), biased
            n_out = max(self.n_levels - 1, 1)
            level_head = 2 * d * d + d + d * n_out + n_out
        return (
            self.n_layer * block
            + v * d
            + self.n_levels * d
            + ln
            + 2 * v * d
            + (v if self.head_bias else 0)
            + level_head
            + (v * d if self.gene_bag else 0)
        )
