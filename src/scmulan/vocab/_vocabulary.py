"""The :class:`Vocabulary`: ``(field, category)`` tokens and their integer ids, lookups, growth and files."""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _names
from ._format import from_plain, to_plain
from ._layout import index_tokens, new_layout
from ._legacy import LEGACY_TASK_NAMES, legacy_parts, read_meta_info
from ._messages import close_matches, unknown_message
from ._names import TASK_WORDS, UnknownTokenError, check_field_name, clean_strings


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

    END = _names.END
    PAD = _names.PAD
    SPECIAL = _names.SPECIAL
    GENE = _names.GENE
    TASK = _names.TASK
    METADATA_FIELDS = _names.METADATA_FIELDS
    TASKS = _names.TASKS

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
        self._metadata_fields, self._fields, self._index, self._members = index_tokens(
            self._tokens, self._aliases, metadata_fields
        )
        self._ids_cache: dict[str, np.ndarray] = {}

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
        tokens, fields = new_layout(genes, metadata, n_reserved=n_reserved)
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
        hints = self.suggestions(field, [u for u in unknown[:3] if isinstance(u, str)])
        return unknown_message(field, unknown, n_na, members=self._members[field], hints=hints)

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
        return close_matches(list(self._field_index(field)), unknown, n)

    def token_id(self, field: str, category: str) -> int:
        """Id of the token ``(field, category)``; ``category`` is converted to a string.

        Raises :class:`~scmulan.vocab.UnknownTokenError` (a :class:`KeyError`) naming the field, the category and
        some valid ones.
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
        :class:`~scmulan.vocab.UnknownTokenError` listing the unknown ones.
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
        for cand in (name, LEGACY_TASK_NAMES.get(name), TASK_WORDS.get(name.strip("<>").lower())):
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
            check_field_name(field)
        existing = self._index.get(field, {})
        new = [c for c in dict.fromkeys(clean_strings(categories, f"categories for {field!r}")) if c not in existing]
        tokens = [*self._tokens, *((field, c) for c in new)]
        fields = [*self._metadata_fields, *([field] if field not in (self.GENE, self.TASK) else [])]
        return type(self)(tokens, self._aliases, metadata_fields=fields, legacy=self._legacy)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into an equal vocabulary."""
        return to_plain(self._tokens, self._aliases, self._metadata_fields, self._legacy)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`."""
        tokens, aliases, metadata_fields, legacy = from_plain(d)
        return cls(tokens, aliases, metadata_fields=metadata_fields, legacy=legacy)

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
