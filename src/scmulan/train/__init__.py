"""Training: the multitask set objective, the Lightning training plan and the runner.

Importing this module imports torch and Lightning; ``import scmulan`` does not import it.
"""

from ._fit import fit, history_from_csv, resolve_precision
from ._objective import ObjectiveOutput, remaining_set_mask, set_objective
from ._plan import CSentenceTrainingPlan, NonFiniteLossError, parameter_groups, warmup_cosine

__all__ = [
    "CSentenceTrainingPlan",
    "NonFiniteLossError",
    "ObjectiveOutput",
    "fit",
    "history_from_csv",
    "parameter_groups",
    "remaining_set_mask",
    "resolve_precision",
    "set_objective",
    "warmup_cosine",
]
