"""The parts of a model that every recipe (training, annotation, generation, calibration) works with."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from scmulan.nn import CSentenceTransformer
from scmulan.sentence import ANNOTATION_FIELDS, TASKS, SentenceLayout
from scmulan.vocab import Vocabulary

UNCLASSIFIED = "Unclassified"


@dataclass(frozen=True)
class ModelParts:
    """A trained (or new) model's parts, as the recipes receive them.

    :class:`~scmulan.SCMULAN` builds one with :meth:`~scmulan.SCMULAN.parts`; a recipe reads what it needs from it
    and returns what it changes, so nothing is shared by convention.

    Attributes
    ----------
    vocab
        The token vocabulary.
    network
        The transformer.
    layout
        How the model's c-sentences are laid out (prompts, gene budgets, gene order).
    obs_keys
        Metadata field -> ``obs`` column of the registered data.
    layer, gene_symbols_key
        Where the registered data keep their expression and gene names.
    legacy
        Imported from the original scMulan checkpoint (and not fine-tuned since).
    metadata_fields
        Fields the metadata task decodes, in order.
    trained_tasks
        Tasks the network learnt.
    is_trained
        Whether the network was trained (an untrained one decodes any prompt, as noise).
    debin_table
        Mean log-normalised value per (gene, level), for generated cells; ``None``: none fitted.
    gene_counts
        Gene counts of the training cells per metadata token (``scmulan.model._gene_counts``), from which generated
        cells draw their length; ``None``: none recorded (generated cells end where the model stops them).
    calibration
        Fitted calibration (``scmulan.model.Calibration.to_dict``), or ``None``.
    """

    vocab: Vocabulary
    network: CSentenceTransformer
    layout: SentenceLayout
    obs_keys: Mapping[str, str]
    layer: str | None = None
    gene_symbols_key: str | None = None
    legacy: bool = False
    metadata_fields: tuple[str, ...] = ()
    trained_tasks: tuple[str, ...] = ()
    is_trained: bool = False
    debin_table: np.ndarray | None = None
    gene_counts: np.ndarray | None = None
    calibration: dict | None = None

    @property
    def annotation_fields(self) -> list[str]:
        """Fields the annotation task decodes, in order (coarse, then fine)."""
        return [f for f in ANNOTATION_FIELDS if f in self.vocab.fields]

    @property
    def next_entity(self) -> bool:
        """Whether the network generates with the next-entity objective (else the original's set objective)."""
        return self.network.config.generation_objective == "next"

    def require_task(self, task: str, method: str) -> None:
        """Refuse to decode the prompt of a task a trained network never learnt (its output would be noise)."""
        if not self.is_trained or task in self.trained_tasks:
            return
        hint = {
            "generation": "include 'generation' in `tasks`",
            "annotation": "register cell-type columns (`coarse_cell_type_key`/`cell_type_key`) and include "
            "'annotation' in `tasks`",
            "metadata": "register metadata columns (`organ_key`, `region_key`, …) and include 'metadata' in `tasks`",
        }[task]
        msg = (
            f"`{method}` decodes the {task} prompt, but this model was trained only on {list(self.trained_tasks)}; "
            f"its {task} output would be untrained noise. Train (or fine-tune) it on the {task} task first: {hint}."
        )
        raise ValueError(msg)

    def cell_type_mask(self) -> np.ndarray:
        """Boolean mask over the vocabulary of the coarse and fine cell-type entities."""
        mask = np.zeros(len(self.vocab), dtype=bool)
        for f in self.annotation_fields:
            mask |= self.vocab.field_mask(f)
        return mask

    def names(self, tokens: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Category names of entity ids (``Unclassified`` where ``valid`` says the id is not acceptable)."""
        lookup = np.array([self.vocab.token(i)[1] for i in range(len(self.vocab))], dtype=object)
        clipped = np.clip(tokens, 0, len(self.vocab) - 1)
        names = lookup[clipped]
        if valid is not None:
            names = np.where((tokens >= 0) & valid[clipped], names, UNCLASSIFIED)
        return names


F = TypeVar("F", bound=Callable[..., Any])


def documented_by(recipe: Callable[..., Any], bound: int = 1) -> Callable[[F], F]:
    """Give a model method the docstring and signature of the recipe it delegates to.

    The recipe's first ``bound`` parameters (the model's parts, and for training its data) are supplied by the
    method; the others are the method's own. The docstring lives once, with the recipe; the return annotation
    stays the method's.
    """

    def decorate(method: F) -> F:
        params = list(inspect.signature(recipe).parameters.values())[bound:]
        first = next(iter(inspect.signature(method).parameters))  # "self", or "cls" for a class method
        kept = [inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD), *params]
        returns = inspect.signature(method).return_annotation
        method.__signature__ = inspect.Signature(kept, return_annotation=returns)  # type: ignore[attr-defined]
        method.__doc__ = recipe.__doc__
        # the recipe's annotations are strings naming objects of its own module: resolve them there
        names = {p.name for p in params}
        hints = {k: _resolve(v, recipe.__globals__) for k, v in recipe.__annotations__.items() if k in names}
        method.__annotations__ = {**hints, "return": method.__annotations__.get("return", returns)}
        return method

    return decorate


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    """An annotation string evaluated in ``namespace`` (left a string when it names something not imported)."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # as typing.get_type_hints does, for our own modules
    except (NameError, TypeError, AttributeError):
        return annotation


def new_parts(
    vocab: Vocabulary,
    network: CSentenceTransformer,
    *,
    obs_keys: Mapping[str, str],
    max_length: int,
    layer: str | None = None,
    gene_symbols_key: str | None = None,
    legacy: bool = False,
    metadata_fields: Sequence[str] | None = None,
    trained_tasks: Sequence[str] | None = None,
    is_trained: bool = False,
    debin_table: np.ndarray | None = None,
    gene_counts: np.ndarray | None = None,
    calibration: dict | None = None,
) -> ModelParts:
    """Checked parts with the defaults of a new model or an imported checkpoint.

    ``metadata_fields`` defaults to every metadata field of the vocabulary other than the cell types;
    ``trained_tasks`` to every task for the original checkpoint (pre-trained on all three), none for a new network.
    """
    if len(vocab) != network.config.vocab_size:
        msg = f"Vocabulary ({len(vocab)} entities) and network ({network.config.vocab_size}) do not match."
        raise ValueError(msg)
    if metadata_fields is None:
        metadata_fields = [f for f in vocab.metadata_fields if f not in ANNOTATION_FIELDS]
    if trained_tasks is None:
        trained_tasks = TASKS if legacy else ()
    return ModelParts(
        vocab=vocab,
        network=network,
        layout=SentenceLayout.for_objective(max_length, network.config.generation_objective),
        obs_keys=dict(obs_keys),
        layer=layer,
        gene_symbols_key=gene_symbols_key,
        legacy=bool(legacy),
        metadata_fields=tuple(metadata_fields),
        trained_tasks=tuple(trained_tasks),
        is_trained=bool(is_trained),
        debin_table=debin_table,
        gene_counts=gene_counts,
        calibration=calibration,
    )
