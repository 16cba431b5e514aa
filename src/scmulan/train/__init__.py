"""Training: the multitask set objective, the Lightning training plan and the runner.

Importing this module imports torch and Lightning; ``import scmulan`` does not import it.
"""

from ._checkpoints import latest_finite_checkpoint
from ._fit import fit, history_from_csv, resolve_precision, resolve_strategy
from ._fsdp import BlockFSDPStrategy, full_state_dict
from ._label_metrics import confusion_counts, label_predictions, macro_f1
from ._objective import (
    LabelTargets,
    ObjectiveOutput,
    label_cross_entropy,
    remaining_set_mask,
    set_objective,
    task_balanced_weights,
)
from ._optim import clip_grad_norm, parameter_groups, warmup_cosine
from ._plan import CSentenceTrainingPlan, NonFiniteLossError
from ._selection import BestCheckpoint
from ._validation_data import ChainedBatches, validation_dataset

__all__ = [
    "BestCheckpoint",
    "BlockFSDPStrategy",
    "CSentenceTrainingPlan",
    "ChainedBatches",
    "LabelTargets",
    "NonFiniteLossError",
    "ObjectiveOutput",
    "clip_grad_norm",
    "confusion_counts",
    "fit",
    "full_state_dict",
    "history_from_csv",
    "label_cross_entropy",
    "label_predictions",
    "latest_finite_checkpoint",
    "macro_f1",
    "parameter_groups",
    "remaining_set_mask",
    "resolve_precision",
    "resolve_strategy",
    "set_objective",
    "task_balanced_weights",
    "validation_dataset",
    "warmup_cosine",
]
