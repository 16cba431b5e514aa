"""The token vocabulary of c-sentences: specials, task prompts, genes and metadata tokens.

A token is a pair ``(field, category)``: ``("gene", "CD3E")``, ``("organ", "Liver")``,
``("task", "<annotate>")``, ``("special", "<E>")``. Every token has one integer id. Metadata fields are
separate namespaces in a new vocabulary; the original scMulan vocabulary (see
:meth:`Vocabulary.from_legacy_meta_info`) shares one id between fields whose labels are the same string,
which is expressed here by *aliases*: extra ``(field, category)`` pairs resolving to an existing id.
"""

from __future__ import annotations

import difflib
import json
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._legacy import LEGACY_LABEL_FIELDS, LEGACY_TASK_NAMES, legacy_parts, read_meta_info

__all__ = ["LEGACY_LABEL_FIELDS", "LEGACY_TASK_NAMES", "UnknownTokenError", "Vocabulary"]

_FORMAT = "scmulan.vocabulary"
_FORMAT_VERSION = 1
_NA_STRINGS = frozenset({"nan", "NaN", "<NA>", "NaT"})
_TASK_SHORT_NAMES = {
    "generate": "<generate>",
    "generation": "<generate>",
    "annotate": "<annotate>",
    "annotation": "<annotate>",
    "metadata": "<metadata>",
}


class UnknownTokenError(KeyError):
    """A field, category or task that the vocabulary does not have (a :class:`KeyError`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _is_na(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, float | np.floating):
        return bool(np.isnan(x))
    return type(x).__name__ in ("NAType", "NaTType")


def _clean_strings(values: Iterable[Any], what: str) -> list[str]:
    """Convert to strings, rejecting missing and empty values (duplicates kept)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        msg = f"{what} must be a sequence of strings, got {type(values).__name__} {values!r:.60}"
        raise ValueError(msg)
    out = []
    for k, x in enumerate(values):
        s = x if isinstance(x, str) else None if _is_na(x) else str(x)
        if s is None or s in _NA_STRINGS:
            msg = f"{what}: entry {k} is a missing value ({x!r}); drop or fill missing values before building the vocabulary"
            raise ValueError(msg)
        if not s.strip():
            msg = f"{what}: entry {k} is an empty string; every category needs a name"
            raise ValueError(msg)
        out.append(s)
    return out


def _check_field_name(field: Any) -> str:
    if not isinstance(field, str) or not field.strip():
        msg = f"a metadata field name must be a non-empty string, got {field!r}"
        raise ValueError(msg)
    if field in (Vocabulary.SPECIAL, Vocabulary.GENE, Vocabulary.TASK):
        msg = f"{field!r} is a reserved field name and cannot be used for metadata"
        raise ValueError(msg)
    return field


def _order_metadata_fields(fields: Iterable[str]) -> list[str]:
    fields = list(dict.fromkeys(fields))
    canonical = [f for f in Vocabulary.METADATA_FIELDS if f in fields]
    return canonical + [f for f in fields if f not in Vocabulary.METADATA_FIELDS]


class Vocabulary:
    """Token vocabulary mapping ``(field, category)`` pairs to integer ids.

    Create one with :meth:`build` (a new model), :meth:`from_legacy_meta_info` (the original scMulan
    vocabulary, ids kept) or :meth:`load`/:meth:`from_dict`. The object is immutable: :meth:`extend` returns
    a new vocabulary.

    Parameters
    ----------
    tokens
        The primary ``(field, category)`` of every id, in id order.
    aliases
        Extra ``(field, category, id)`` lookups resolving to an existing id (shared metadata strings,
        original task names).
    metadata_fields
        Metadata fields, including any without tokens; ordered canonically (:attr:`METADATA_FIELDS` first),
        then in the given order. Defaults to the fields found in ``tokens`` and ``aliases``.
    legacy
        Whether ids ``0..2221`` are those of the original scMulan vocabulary.
    """

    END = "<E>"
    PAD = "<PAD>"
    SPECIAL = "special"
    GENE = "gene"
    TASK = "task"
    METADATA_FIELDS = ("organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease")
    TASKS = ("<generate>", "<annotate>", "<metadata>")

    def __init__(
        self,
        tokens: Sequence[tuple[str, str]],
        aliases: Sequence[tuple[str, str, int]] = (),
        *,
        metadata_fields: Sequence[str] | None = None,
        legacy: bool = False,
    ) -> None:
        self._tokens = tuple((str(f), str(c)) for f, c in tokens)
        self._aliases = tuple((str(f), str(c), operator.index(i)) for f, c, i in aliases)
        self._legacy = bool(legacy)
        kinds = (self.SPECIAL, self.GENE, self.TASK)
        found = [f for f, *_ in (*self._tokens, *self._aliases) if f not in kinds]
        declared = list(found if metadata_fields is None else metadata_fields)
        for f in declared:
            _check_field_name(f)
        undeclared = sorted(set(found) - set(declared))
        if undeclared:
            msg = f"tokens use metadata field(s) {undeclared} that are missing from metadata_fields={declared}"
            raise ValueError(msg)
        self._metadata_fields = tuple(_order_metadata_fields(declared))
        present = {f for f, _ in self._tokens}
        self._fields = (*(k for k in (self.SPECIAL, self.TASK, self.GENE) if k in present), *self._metadata_fields)
        all_fields = (*kinds, *self._metadata_fields)
        self._index: dict[str, dict[str, int]] = {f: {} for f in all_fields}
        self._members: dict[str, dict[int, str]] = {f: {} for f in all_fields}
        self._ids_cache: dict[str, np.ndarray] = {}
        for i, (field, category) in enumerate(self._tokens):
            if field == self.SPECIAL and category not in (self.END, self.PAD):
                msg = (
                    f"unknown special token {category!r} (id {i}); the special tokens are {self.END!r} and {self.PAD!r}"
                )
                raise ValueError(msg)
            self._register(field, category, i)
        if self.END not in self._index[self.SPECIAL]:
            msg = f"a vocabulary needs the end token ({self.SPECIAL!r}, {self.END!r})"
            raise ValueError(msg)
        for field, category, i in self._aliases:
            if not 0 <= i < len(self._tokens):
                msg = f"alias ({field!r}, {category!r}) points at id {i}, outside 0..{len(self._tokens) - 1}"
                raise ValueError(msg)
            target = self._tokens[i][0]
            fixed = (self.SPECIAL, self.GENE)  # never aliased, nor alias targets
            if field in fixed or target in fixed or (field == self.TASK) != (target == self.TASK):
                msg = f"alias ({field!r}, {category!r}) -> id {i} crosses token kinds (id {i} is a {target!r} token)"
                raise ValueError(msg)
            self._register(field, category, i)

    def _register(self, field: str, category: str, i: int) -> None:
        cats = self._index[field]
        if category in cats:
            msg = f"token ({field!r}, {category!r}) is given twice (ids {cats[category]} and {i})"
            raise ValueError(msg)
        cats[category] = i
        self._members[field].setdefault(i, category)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        genes: Sequence[str],
        metadata: Mapping[str, Sequence[str]] | None = None,
        *,
        n_reserved: int = 13,
    ) -> Vocabulary:
        """Build a new vocabulary.

        Layout: 0 ``<E>``, 1 ``<PAD>``, the task tokens ``<generate>``, ``<annotate>``, ``<metadata>``,
        ``<reserved1>`` … ``<reserved{n_reserved}>``, the genes in the given order, then the metadata fields
        (those of :attr:`METADATA_FIELDS` in canonical order, then extra fields in the given order), each
        with its categories in the given order, duplicates dropped. Every field is its own namespace: the
        same string in two fields gives two tokens.

        Parameters
        ----------
        genes
            Gene symbols; duplicates are an error.
        metadata
            Field name -> categories (converted to strings; missing or empty categories are an error).
        n_reserved
            Number of reserved task tokens for tasks added by fine-tuning.
        """
        if isinstance(n_reserved, bool) or not isinstance(n_reserved, int | np.integer) or n_reserved < 0:
            msg = f"n_reserved must be a non-negative integer, got {n_reserved!r}"
            raise ValueError(msg)
        gene_list = _clean_strings(genes, "genes")
        if not gene_list:
            msg = "genes is empty; a vocabulary needs at least one gene"
            raise ValueError(msg)
        if len(set(gene_list)) != len(gene_list):
            seen: set[str] = set()
            dups = list(dict.fromkeys(g for g in gene_list if g in seen or seen.add(g)))
            msg = f"genes has {len(dups)} duplicated symbol(s), e.g. {dups[:5]}; make gene names unique first"
            raise ValueError(msg)
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, Mapping):
            msg = f"metadata must be a mapping of field name -> categories, got {type(metadata).__name__}"
            raise ValueError(msg)
        fields = _order_metadata_fields(_check_field_name(f) for f in metadata)
        tokens = [(cls.SPECIAL, cls.END), (cls.SPECIAL, cls.PAD)]
        tokens += [(cls.TASK, t) for t in cls.TASKS]
        tokens += [(cls.TASK, f"<reserved{k}>") for k in range(1, int(n_reserved) + 1)]
        tokens += [(cls.GENE, g) for g in gene_list]
        for field in fields:
            cats = dict.fromkeys(_clean_strings(metadata[field], f"metadata[{field!r}]"))
            tokens += [(field, c) for c in cats]
        return cls(tokens, metadata_fields=fields)

    @classmethod
    def from_legacy_meta_info(cls, path: str | os.PathLike | Mapping[str, Any]) -> Vocabulary:
        """The original scMulan vocabulary from its ``meta_info.pt`` (or that file's JSON form).

        Ids are the original ones (index in ``meta_info['token_set']``, 2,222 tokens). ``<E>`` is
        ``("special", "<E>")``; the genes are ``("gene", symbol)``; each metadata string gets the field of
        the block it sits in as its primary field (see :meth:`token`) and resolves from every label set
        holding it (``organ`` -> organ, ``region`` -> region, ``MCT`` -> coarse_cell_type,
        ``cell_type`` -> cell_type, ``donor_gender`` -> sex, ``age_bin`` -> age, ``seq_tech`` -> technology,
        ``sample_status`` -> disease), so ``Unclassified`` (id 2010) is one id for six fields.
        ``<PCT>``, ``<SPToken1>`` and ``<SPToken3>`` become ``<annotate>``, ``<generate>`` and ``<metadata>``
        (their original names still resolve); the other ``<SPTokenN>`` are reserved task tokens. There is no
        ``<PAD>`` token: :attr:`pad_id` is :attr:`end_id`.

        The ``.pt`` file is read without executing pickled code and without torch: a restricted unpickler
        rebuilds only builtin containers (the file holds Python sets).

        Parameters
        ----------
        path
            ``meta_info.pt``, its JSON form (sets as lists), or the loaded mapping.
        """
        tokens, aliases = legacy_parts(read_meta_info(path))
        return cls(tokens, aliases, metadata_fields=cls.METADATA_FIELDS, legacy=True)

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self._tokens)

    def _field_index(self, field: str) -> dict[str, int]:
        try:
            return self._index[field]
        except (KeyError, TypeError):
            msg = f"unknown field {field!r}; this vocabulary has the fields {self.fields}"
            raise UnknownTokenError(msg) from None

    def _unknown_message(self, field: str, unknown: Sequence[str], n_na: int = 0) -> str:
        what = "gene(s)" if field == self.GENE else f"{field!r} categor{'y' if len(unknown) == 1 else 'ies'}"
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown {what}: {list(unknown[:5])}{' …' if len(unknown) > 5 else ''}")
        if n_na:
            parts.append(f"{n_na} missing value(s)")
        msg = "; ".join(parts) + f". The vocabulary has {len(self._members[field])} {field!r} token(s)"
        examples = list(self._members[field].values())[:5]
        if examples:
            msg += f", e.g. {examples}"
        hints = self.suggestions(field, [u for u in unknown[:3] if isinstance(u, str)])
        if hints:
            msg += "; did you mean " + "; ".join(f"{close} for {u!r}" for u, close in hints.items()) + "?"
        if field == self.TASK:
            msg += "; use task_id() for task names"
        return msg

    def suggestions(self, field: str, unknown: Sequence[str], n: int = 3) -> dict[str, list[str]]:
        """Close matches among the categories of ``field`` for each unknown category that has any.

        Spelling variants (:func:`difflib.get_close_matches`, ignoring case) come first, then categories the unknown one is a
        case-insensitive prefix or word subset of (``"T"`` → ``"T cell"``), shortest first.

        Parameters
        ----------
        field
            The field to search.
        unknown
            Categories the field does not have.
        n
            Most matches per category.
        """
        cats = list(self._field_index(field))
        lowered = {c.lower(): c for c in cats}
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

    def token_id(self, field: str, category: str) -> int:
        """Id of the token ``(field, category)``; ``category`` is converted to a string.

        Raises :class:`UnknownTokenError` (a :class:`KeyError`) naming the field, the category and some
        valid ones.
        """
        cats = self._field_index(field)
        key = category if isinstance(category, str) else str(category)
        try:
            return cats[key]
        except KeyError:
            raise UnknownTokenError(self._unknown_message(field, [key])) from None

    def token_ids(self, field: str, categories: Sequence[str], *, missing: int | None = None) -> np.ndarray:
        """Ids (``int64``, same shape) of many categories of one field.

        Unknown and missing (NA) categories map to ``missing`` if given, else raise
        :class:`UnknownTokenError` listing the unknown ones.
        """
        import pandas as pd

        cats = self._field_index(field)
        if isinstance(categories, str | bytes):
            msg = f"categories must be a sequence, got the string {categories!r}; use token_id() for one category"
            raise ValueError(msg)
        if missing is not None:
            missing = operator.index(missing)
        values = np.asarray(categories, dtype=object)
        codes, uniques = pd.factorize(values.ravel())
        lut = np.empty(len(uniques) + 1, dtype=np.int64)  # last slot: NA
        unknown = []
        for k, u in enumerate(uniques):
            key = u if isinstance(u, str) else str(u)
            i = cats.get(key)
            if i is None:
                unknown.append(key)
                i = -1 if missing is None else missing
            lut[k] = i
        n_na = int(np.count_nonzero(codes < 0))
        if missing is None and (unknown or n_na):
            raise UnknownTokenError(self._unknown_message(field, unknown, n_na))
        lut[-1] = -1 if missing is None else missing
        return lut[codes].reshape(values.shape)

    def has_token(self, field: str, category: str) -> bool:
        """Whether ``(field, category)`` resolves to an id (unknown fields give ``False``)."""
        return str(category) in self._index.get(field, {})

    def token(self, id: int) -> tuple[str, str]:
        """``(field, category)`` of an id, in its primary field (the block of the layout it sits in)."""
        i = operator.index(id)
        if not 0 <= i < len(self._tokens):
            msg = f"token id {i} is out of range for a vocabulary of {len(self._tokens)} tokens"
            raise IndexError(msg)
        return self._tokens[i]

    def field_ids(self, field: str) -> np.ndarray:
        """Sorted ``int64`` ids of all tokens usable for ``field``, shared (aliased) ids included."""
        self._field_index(field)
        ids = self._ids_cache.get(field)
        if ids is None:
            ids = self._ids_cache[field] = np.array(sorted(self._members[field]), dtype=np.int64)
        return ids.copy()

    def field_mask(self, field: str) -> np.ndarray:
        """Boolean mask of shape ``(len(vocab),)``, true at :meth:`field_ids`."""
        mask = np.zeros(len(self), dtype=bool)
        mask[self.field_ids(field)] = True
        return mask

    def categories(self, field: str) -> list[str]:
        """Categories of ``field`` in id order (one name per id: its name in that field)."""
        self._field_index(field)
        members = self._members[field]
        return [members[i] for i in sorted(members)]

    @property
    def fields(self) -> list[str]:
        """Every field: ``special``, ``task``, ``gene`` (when present), then :attr:`metadata_fields`."""
        return list(self._fields)

    @property
    def metadata_fields(self) -> list[str]:
        """Metadata fields: those of :attr:`METADATA_FIELDS` in canonical order, then extra fields."""
        return list(self._metadata_fields)

    @property
    def genes(self) -> list[str]:
        """Gene symbols in id order."""
        return self.categories(self.GENE)

    @property
    def gene_ids(self) -> np.ndarray:
        """Ids of :attr:`genes`."""
        return self.field_ids(self.GENE)

    def gene_index(self) -> dict[str, int]:
        """A new dict gene symbol -> id (fast lookups)."""
        return dict(self._index[self.GENE])

    @property
    def end_id(self) -> int:
        """Id of the end-of-sentence token ``<E>``."""
        return self._index[self.SPECIAL][self.END]

    @property
    def pad_id(self) -> int:
        """Id of ``<PAD>``.

        The original vocabulary has no padding token; there this is :attr:`end_id` (0). Padded positions are
        always masked out of attention and losses, so the value never reaches the network's outputs.
        """
        return self._index[self.SPECIAL].get(self.PAD, self.end_id)

    def task_id(self, task: str) -> int:
        """Id of a task prompt: ``"<generate>"``, ``"<annotate>"``, ``"<metadata>"``, a reserved name.

        The original names (``"<PCT>"``, ``"<SPToken1>"``, ``"<SPToken3>"``) and the plain words
        ``"annotation"``/``"annotate"``, ``"generation"``/``"generate"``, ``"metadata"`` are accepted too.
        """
        cats = self._index.get(self.TASK, {})
        name = str(task)
        for cand in (name, LEGACY_TASK_NAMES.get(name), _TASK_SHORT_NAMES.get(name.strip("<>").lower())):
            if cand is not None and cand in cats:
                return cats[cand]
        msg = f"unknown task {task!r}; this vocabulary has the task tokens {self.categories(self.TASK)}"
        raise UnknownTokenError(msg)

    @property
    def is_legacy(self) -> bool:
        """Whether this is (an extension of) the original scMulan vocabulary, ids kept."""
        return self._legacy

    # ------------------------------------------------------------------ growth
    def extend(self, field: str, categories: Sequence[str]) -> Vocabulary:
        """A new vocabulary with ``categories`` added to ``field`` (a new metadata field is allowed).

        Categories already resolving in ``field`` are skipped; new tokens get ids after the last one, so
        every existing id keeps its meaning.
        """
        if field == self.SPECIAL:
            msg = f"the {self.SPECIAL!r} field is fixed ({self.END!r}, {self.PAD!r}) and cannot be extended"
            raise ValueError(msg)
        if field not in (self.GENE, self.TASK):
            _check_field_name(field)
        existing = self._index.get(field, {})
        new = [c for c in dict.fromkeys(_clean_strings(categories, f"categories for {field!r}")) if c not in existing]
        tokens = [*self._tokens, *((field, c) for c in new)]
        fields = [*self._metadata_fields, *([field] if field not in (self.GENE, self.TASK) else [])]
        return type(self)(tokens, self._aliases, metadata_fields=fields, legacy=self._legacy)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into an equal vocabulary."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "legacy": self._legacy,
            "metadata_fields": list(self._metadata_fields),
            "tokens": [[f, c] for f, c in self._tokens],
            "aliases": [[f, c, i] for f, c, i in self._aliases],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, Mapping) or d.get("format") != _FORMAT:
            msg = f"not a serialised scmulan vocabulary (expected 'format': {_FORMAT!r})"
            raise ValueError(msg)
        if d.get("version") != _FORMAT_VERSION:
            msg = f"unsupported vocabulary format version {d.get('version')!r}; this scmulan reads version {_FORMAT_VERSION}"
            raise ValueError(msg)
        try:
            tokens = [(f, c) for f, c in d["tokens"]]
            aliases = [(f, c, i) for f, c, i in d.get("aliases", [])]
        except (KeyError, TypeError, ValueError) as e:
            msg = f"malformed serialised vocabulary: {e}"
            raise ValueError(msg) from e
        return cls(tokens, aliases, metadata_fields=d.get("metadata_fields"), legacy=bool(d.get("legacy", False)))

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (UTF-8)."""
        from scmulan._files import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save` (a damaged file raises a :class:`ValueError` naming it)."""
        from scmulan._files import DamagedFileError, read_json

        data = read_json(path, what="a scmulan vocabulary")
        try:
            return cls.from_dict(data)
        except ValueError as e:
            msg = f"{os.fspath(path)} is not a scmulan vocabulary ({e}); pass a file written by `Vocabulary.save`."
            raise DamagedFileError(msg) from None

    # ------------------------------------------------------------------ dunder
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self._tokens, self._aliases, self._metadata_fields, self._legacy) == (
            other._tokens,
            other._aliases,
            other._metadata_fields,
            other._legacy,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        counts = ", ".join(f"{f}={len(self._members[f])}" for f in self.fields)
        return f"Vocabulary({len(self)} tokens{', legacy' if self._legacy else ''}; {counts})"
