"""Names in a vocabulary: the token kinds, cleaning categories (missing values refused), checking field names.

Also the error every lookup of an unknown field, category or task raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

END = "<E>"
PAD = "<PAD>"
SPECIAL = "special"
GENE = "gene"
TASK = "task"
#: The metadata fields every vocabulary orders first, in this order.
METADATA_FIELDS = ("organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease")
TASKS = ("<generate>", "<annotate>", "<metadata>")
#: Plain words accepted for the task prompts.
TASK_WORDS = {
    "generate": "<generate>",
    "generation": "<generate>",
    "annotate": "<annotate>",
    "annotation": "<annotate>",
    "metadata": "<metadata>",
}

_NA_STRINGS = frozenset({"nan", "NaN", "<NA>", "NaT"})


class UnknownTokenError(KeyError):
    """A field, category or task that the vocabulary does not have (a :class:`KeyError`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def is_na(x: Any) -> bool:
    """Whether ``x`` is a missing value: ``None``, a NaN float, ``pd.NA`` or ``pd.NaT``."""
    if x is None:
        return True
    if isinstance(x, float | np.floating):
        return bool(np.isnan(x))
    return type(x).__name__ in ("NAType", "NaTType")


def clean_strings(values: Iterable[Any], what: str) -> list[str]:
    """Convert to strings, rejecting missing and empty values (duplicates kept).

    Parameters
    ----------
    values
        The categories (any objects; non-strings are converted with :class:`str`).
    what
        How ``values`` is named in error messages, e.g. ``"genes"``.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        msg = f"{what} must be a sequence of strings, got {type(values).__name__} {values!r:.60}"
        raise ValueError(msg)
    out = []
    for k, x in enumerate(values):
        s = x if isinstance(x, str) else None if is_na(x) else str(x)
        if s is None or s in _NA_STRINGS:
            msg = f"{what}: entry {k} is a missing value ({x!r}); drop or fill missing values before building the vocabulary"
            raise ValueError(msg)
        if not s.strip():
            msg = f"{what}: entry {k} is an empty string; every category needs a name"
            raise ValueError(msg)
        out.append(s)
    return out


def check_field_name(field: Any) -> str:
    """``field`` if it can name a metadata field (a non-empty string, not a token kind); else a ValueError."""
    if not isinstance(field, str) or not field.strip():
        msg = f"a metadata field name must be a non-empty string, got {field!r}"
        raise ValueError(msg)
    if field in (SPECIAL, GENE, TASK):
        msg = f"{field!r} is a reserved field name and cannot be used for metadata"
        raise ValueError(msg)
    return field


def order_metadata_fields(fields: Iterable[str]) -> list[str]:
    """Unique fields: those of :data:`METADATA_FIELDS` in canonical order, then the others in the given order."""
    fields = list(dict.fromkeys(fields))
    canonical = [f for f in METADATA_FIELDS if f in fields]
    return canonical + [f for f in fields if f not in METADATA_FIELDS]
