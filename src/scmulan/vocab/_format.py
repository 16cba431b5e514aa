"""The serialised form of a vocabulary: a JSON-ready dict with a format name and version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

FORMAT = "scmulan.vocabulary"
FORMAT_VERSION = 1


def to_plain(
    tokens: Sequence[tuple[str, str]],
    aliases: Sequence[tuple[str, str, int]],
    metadata_fields: Sequence[str],
    legacy: bool,
) -> dict[str, Any]:
    """The JSON-ready dict of a vocabulary's parts (the inverse of :func:`from_plain`).

    Parameters
    ----------
    tokens
        The primary ``(field, category)`` of every id, in id order.
    aliases
        Extra ``(field, category, id)`` lookups.
    metadata_fields
        The metadata fields, in order.
    legacy
        Whether ids ``0..2221`` are those of the original scMulan vocabulary.
    """
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "legacy": legacy,
        "metadata_fields": list(metadata_fields),
        "tokens": [[f, c] for f, c in tokens],
        "aliases": [[f, c, i] for f, c, i in aliases],
    }


def from_plain(
    d: Mapping[str, Any],
) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any, Any]], Sequence[str] | None, bool]:
    """``(tokens, aliases, metadata_fields, legacy)`` of a dict written by :func:`to_plain`.

    Parameters
    ----------
    d
        The serialised vocabulary.

    Raises
    ------
    ValueError
        For anything else, an unsupported version or malformed entries.
    """
    if not isinstance(d, Mapping) or d.get("format") != FORMAT:
        msg = f"not a serialised scmulan vocabulary (expected 'format': {FORMAT!r})"
        raise ValueError(msg)
    if d.get("version") != FORMAT_VERSION:
        msg = f"unsupported vocabulary format version {d.get('version')!r}; this scmulan reads version {FORMAT_VERSION}"
        raise ValueError(msg)
    try:
        tokens = [(f, c) for f, c in d["tokens"]]
        aliases = [(f, c, i) for f, c, i in d.get("aliases", [])]
    except (KeyError, TypeError, ValueError) as e:
        msg = f"malformed serialised vocabulary: {e}"
        raise ValueError(msg) from e
    return tokens, aliases, d.get("metadata_fields"), bool(d.get("legacy", False))
