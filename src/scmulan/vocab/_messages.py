"""What a lookup of unknown categories says: how many, examples of valid ones, and close matches."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

from ._names import GENE, TASK


def close_matches(categories: Iterable[str], unknown: Sequence[str], n: int = 3) -> dict[str, list[str]]:
    """Close matches among ``categories`` for each unknown category that has any.

    Spelling variants (:func:`difflib.get_close_matches`, ignoring case) come first, then categories the unknown
    one is a case-insensitive prefix or word subset of (``"T"`` → ``"T cell"``), shortest first.

    Parameters
    ----------
    categories
        The categories of one field.
    unknown
        Categories the field does not have.
    n
        Most matches per category.
    """
    lowered = {c.lower(): c for c in categories}
    out = {}
    for u in unknown:
        key = str(u).lower()
        words = set(key.split())
        contains = [c for low, c in lowered.items() if words and (low.startswith(key) or words <= set(low.split()))]
        contains.sort(key=len)
        close = [lowered[c] for c in difflib.get_close_matches(key, list(lowered), n=n)]
        matches = list(dict.fromkeys(close + contains))[:n]
        if matches:
            out[str(u)] = matches
    return out


def unknown_message(
    field: str, unknown: Sequence[str], n_na: int, *, members: Mapping[int, str], hints: Mapping[str, list[str]]
) -> str:
    """The message of an :class:`UnknownTokenError` for unknown and missing categories of ``field``.

    Parameters
    ----------
    field
        The field looked up.
    unknown
        Categories it does not have.
    n_na
        Missing values among the categories looked up.
    members
        ``id -> category`` of the field (counted, and the first ones shown as examples).
    hints
        Close matches per unknown category (:func:`close_matches`).
    """
    what = "gene(s)" if field == GENE else f"{field!r} categor{'y' if len(unknown) == 1 else 'ies'}"
    parts = []
    if unknown:
        parts.append(f"{len(unknown)} unknown {what}: {list(unknown[:5])}{' …' if len(unknown) > 5 else ''}")
    if n_na:
        parts.append(f"{n_na} missing value(s)")
    msg = "; ".join(parts) + f". The vocabulary has {len(members)} {field!r} token(s)"
    examples = list(members.values())[:5]
    if examples:
        msg += f", e.g. {examples}"
    if hints:
        msg += "; did you mean " + "; ".join(f"{close} for {u!r}" for u, close in hints.items()) + "?"
    if field == TASK:
        msg += "; use task_id() for task names"
    return msg
