"""The layout of a c-sentence for every task: the one place that decides prompts, gene budgets and gene order.

=============== ========================================================= ==========================================
task            sentence (training; inference stops after the prompt)     genes kept at most (``max_length`` less…)
=============== ========================================================= ==========================================
generation      context metadata…, ``<generate>``, genes…, ``<E>``        the metadata, the task token and ``<E>``
annotation      genes…, context metadata…, ``<annotate>``, coarse, fine,  the metadata, the task token, ``<E>`` and
                ``<E>``                                                   one spare position (training); the context,
                                                                          the task token and three decoded steps
                                                                          (inference)
metadata        genes…, context metadata…, ``<metadata>``, fields…,       as annotation
                ``<E>``
=============== ========================================================= ==========================================

Prompt genes come in descending token id (the original scMulan's order) at inference and in random order in
training sentences; generation sentences list their genes in random order for the set objective and from the most
to the least expressed for the next-entity objective. A cell expressing more genes than fit keeps its most highly
expressed ones. Training, inference and generation all ask a :class:`SentenceLayout`; nothing else computes a
budget, a prompt token or a gene order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ._assemble import Sentences, prompts
from ._genes import GeneOrder, GeneSegments, gene_segments
from ._tasks import TASK_TOKENS, TaskSpec

if TYPE_CHECKING:
    from scipy import sparse

#: Positions a training sentence needs besides its genes and metadata: the task token, ``<E>`` and one spare.
TRAINING_RESERVE = 3
#: Positions an inference prompt needs besides its genes and context: the task token and up to three decoded steps
#: (the original's annotation decodes three).
DECODING_RESERVE = 4
#: Positions a generated cell needs besides its conditions and prompt genes: the ``<generate>`` token.
GENERATION_RESERVE = 1


@dataclass(frozen=True)
class SentenceLayout:
    """How the c-sentences of one model are laid out, for every task.

    Parameters
    ----------
    max_length
        Longest sentence (prompt and continuation), in tokens.
    generation_order
        Gene order of generation training sentences: ``"shuffle"`` (the set objective's unordered set) or
        ``"descending"`` (most to least expressed: the next-entity objective).

    Examples
    --------
    >>> layout = SentenceLayout(max_length=100)
    >>> layout.prompt_token("annotation")
    '<annotate>'
    >>> layout.decoding_gene_budget(n_context=2)
    94
    """

    max_length: int = 1550
    generation_order: Literal["shuffle", "descending"] = "shuffle"

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or int(self.max_length) != self.max_length or self.max_length < 2:
            msg = f"`max_length` must be an integer >= 2, got {self.max_length!r}."
            raise ValueError(msg)
        if self.generation_order not in ("shuffle", "descending"):
            msg = f"`generation_order` must be 'shuffle' or 'descending', got {self.generation_order!r}."
            raise ValueError(msg)

    @classmethod
    def for_objective(cls, max_length: int, generation_objective: str) -> SentenceLayout:
        """The layout of a network trained with ``generation_objective`` (``"set"`` or ``"next"``)."""
        return cls(int(max_length), "descending" if generation_objective == "next" else "shuffle")

    # -- prompts --------------------------------------------------------------------------------------------------
    @staticmethod
    def prompt_token(task: str) -> str:
        """The prompt token of ``task`` (``"generation"``, ``"annotation"`` or ``"metadata"``)."""
        try:
            return TASK_TOKENS[task]
        except KeyError:
            msg = f"Unknown task {task!r}; the tasks are {list(TASK_TOKENS)}."
            raise ValueError(msg) from None

    # -- gene budgets ---------------------------------------------------------------------------------------------
    def training_gene_budget(self, n_fields: int) -> int:
        """Genes a training sentence keeps at most, for ``n_fields`` registered metadata fields."""
        return max(1, self.max_length - n_fields - TRAINING_RESERVE)

    def decoding_gene_budget(self, n_context: int) -> int:
        """Genes an annotation, metadata or embedding prompt keeps at most, with ``n_context`` metadata tokens."""
        return max(1, self.max_length - n_context - DECODING_RESERVE)

    def generation_budget(self, n_conditions: int, n_prompt_genes: int = 0, max_length: int | None = None) -> int:
        """Genes a generated cell may add after ``n_conditions`` metadata tokens and ``n_prompt_genes`` fixed genes.

        Raises
        ------
        ValueError
            When nothing is left to generate.
        """
        length = self.max_length if max_length is None else max_length
        budget = length - n_conditions - GENERATION_RESERVE - n_prompt_genes
        if budget < 1:
            msg = f"`max_length` ({length}) leaves no room to generate genes after the prompt."
            raise ValueError(msg)
        return budget

    # -- genes ----------------------------------------------------------------------------------------------------
    def training_genes(self, X, col_token: np.ndarray, n_fields: int, rng: np.random.Generator) -> GeneSegments:
        """The genes of training sentences: random order, cut to :meth:`training_gene_budget`."""
        return gene_segments(X, col_token, order="shuffle", max_genes=self.training_gene_budget(n_fields), rng=rng)

    def decoding_genes(
        self, X: sparse.spmatrix | np.ndarray, col_token: np.ndarray, n_context: int, *, truncate: bool = True
    ) -> GeneSegments:
        """The genes of inference prompts: descending token id, cut to :meth:`decoding_gene_budget`.

        ``truncate=False`` keeps every gene (the original scMulan's inference, which never cut a prompt).
        """
        order: GeneOrder = "legacy"
        budget = self.decoding_gene_budget(n_context) if truncate else None
        return gene_segments(X, col_token, order=order, max_genes=budget)

    # -- whole sentences ------------------------------------------------------------------------------------------
    def inference_prompts(self, task_id: int, genes: GeneSegments, context: np.ndarray | None = None) -> Sentences:
        """Prompts ``genes…, context…, <task>`` for annotation, metadata prediction and embeddings."""
        return prompts(task_id, len(genes.lengths), genes=genes, context=context)

    def generation_prompts(
        self, task_id: int, conditions: np.ndarray, prompt_genes: GeneSegments | None = None
    ) -> Sentences:
        """Prompts ``conditions…, <generate>, prompt genes…`` (conditions: ``-1`` where absent)."""
        return prompts(task_id, conditions.shape[0], context=conditions, prompt_genes=prompt_genes)

    def task_spec(
        self,
        fields: Sequence[str],
        weights: Sequence[float],
        *,
        metadata_fields: Sequence[str] | None = None,
        context_dropout: float = 0.5,
        gene_dropout: float = 0.0,
    ) -> TaskSpec:
        """The training task mix over ``fields``, with this layout's generation gene order."""
        return TaskSpec(
            fields=tuple(fields),
            weights=tuple(weights),
            metadata_fields=tuple(metadata_fields) if metadata_fields is not None else None,
            context_dropout=context_dropout,
            gene_dropout=gene_dropout,
            generation_order=self.generation_order,
        )
