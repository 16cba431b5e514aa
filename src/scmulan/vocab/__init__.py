"""The token vocabulary of c-sentences: specials, task prompts, genes and metadata tokens.

A token is a pair ``(field, category)``: ``("gene", "CD3E")``, ``("organ", "Liver")``,
``("task", "<annotate>")``, ``("special", "<E>")``. Every token has one integer id. Metadata fields are
separate namespaces in a new vocabulary; the original scMulan vocabulary (see
:meth:`Vocabulary.from_legacy_meta_info`) shares one id between fields whose labels are the same string,
which is expressed here by *aliases*: extra ``(field, category)`` pairs resolving to an existing id.
"""

from ._legacy import LEGACY_LABEL_FIELDS, LEGACY_TASK_NAMES
from ._names import UnknownTokenError
from ._vocabulary import Vocabulary

__all__ = ["LEGACY_LABEL_FIELDS", "LEGACY_TASK_NAMES", "UnknownTokenError", "Vocabulary"]
