"""Gene identifiers: normalisation, alias tables, and matching a dataset's genes to a model's gene set.

Pure functions on identifiers (no AnnData): :func:`scmulan.pp.prepare` is the AnnData-facing runner.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ._gene_table import GeneTable

#: Per-var outcome of gene resolution, stored as categories of ``var["scmulan_gene_status"]``: the resolved ones
#: first (also their priority among duplicates, best first), then why a var is left unresolved.
STATUSES = (
    "kept",
    "case_matched",
    "renamed",
    "ensembl_id",
    "previous_symbol",
    "suffix_stripped",
    "ambiguous",
    "not_in_model",
    "unrecognised",
    "duplicate",
)
_RESOLVED = STATUSES[:6]
#: Statuses whose resolved gene is another name than the identifier (their examples read ``"old->new"``).
_RENAMING = frozenset({"case_matched", "renamed", "ensembl_id", "previous_symbol", "suffix_stripped"})
#: The matching rules of the overlap report and the statuses each counts.
RULES = {
    "symbol": ("kept", "case_matched"),
    "ensembl_id": ("ensembl_id",),
    "alias": ("renamed", "previous_symbol"),
    "suffix_stripped": ("suffix_stripped",),
}
# what anndata's var_names_make_unique appends: "-1", "-2", ... to a name that does not end in "-"
_MAKE_UNIQUE = re.compile(r"^(.*[^-])-\d+$")
# Ensembl stable id followed by a version: ENSG00000141510.16, ENSMUSG00000059552.13, ENST...
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*\d{6,})\.\d+")
_N_EXAMPLES = 20

AliasesLike = pd.DataFrame | Mapping[str, str | Iterable[str]] | str | os.PathLike


def normalize_gene_ids(ids: Iterable[Any]) -> np.ndarray:
    """Normalise gene identifiers the way the original scMulan does, plus Ensembl versions.

    Surrounding whitespace is stripped, an Ensembl version suffix is removed
    (``ENSG00000141510.16`` → ``ENSG00000141510``) and ``_`` is replaced by ``-``.

    Parameters
    ----------
    ids
        Gene symbols or Ensembl ids; missing values (``None``, NaN, ``""``) are allowed.

    Returns
    -------
    Object array of str, with ``None`` where an identifier is missing.
    """
    s = pd.Series(list(ids), dtype=object)
    missing = s.isna().to_numpy()
    s = s.where(~missing, "").astype(str)
    s = s.str.strip().str.replace(_ENSEMBL_VERSION, r"\1", regex=True).str.replace("_", "-", regex=False)
    out = s.to_numpy(dtype=object)
    out[missing | (out == "")] = None
    return out


def read_aliases(aliases: AliasesLike) -> pd.DataFrame:
    """Read an alias table into a DataFrame with columns ``alias`` and ``symbol`` (both normalised).

    Parameters
    ----------
    aliases
        - a DataFrame with two columns (``alias`` and ``symbol`` if so named, else the first is the alias);
        - a mapping alias → symbol (or alias → several symbols);
        - a path to a CSV or TSV file (``.tsv``/``.txt``, optionally gzipped, is read tab-separated) with a
          header line and two such columns.

    Returns
    -------
    One row per distinct (alias, symbol) pair.
    """
    if isinstance(aliases, str | os.PathLike):
        path = Path(aliases)
        if not path.is_file():
            msg = f"`aliases` file {str(path)!r} does not exist; pass a CSV/TSV path, a DataFrame or a dict."
            raise ValueError(msg)
        suffixes = [s.lower() for s in path.suffixes]
        sep = "\t" if {".tsv", ".txt", ".tab"} & set(suffixes) else ","
        table = pd.read_csv(path, sep=sep, dtype=str)
    elif isinstance(aliases, pd.DataFrame):
        table = aliases
    elif isinstance(aliases, Mapping):
        pairs = [
            (alias, symbol)
            for alias, symbols in aliases.items()
            for symbol in ([symbols] if isinstance(symbols, str) else symbols)
        ]
        table = pd.DataFrame(pairs, columns=["alias", "symbol"])
    else:
        msg = (
            f"`aliases` must be a DataFrame, a mapping alias → symbol or a CSV/TSV path, got {type(aliases).__name__}."
        )
        raise TypeError(msg)

    if {"alias", "symbol"} <= set(table.columns):
        table = table[["alias", "symbol"]]
    elif table.shape[1] != 2:
        msg = (
            f"`aliases` must have two columns (alias, symbol), got {table.shape[1]}: {list(table.columns)}. "
            "Name them 'alias' and 'symbol' or keep only those two."
        )
        raise ValueError(msg)
    out = pd.DataFrame({"alias": normalize_gene_ids(table.iloc[:, 0]), "symbol": normalize_gene_ids(table.iloc[:, 1])})
    return out.dropna().drop_duplicates().reset_index(drop=True)


def model_gene_list(genes: Any) -> tuple[list[str], str]:
    """The model's gene set from the forms ``prepare`` accepts, and a short description for ``params``.

    Parameters
    ----------
    genes
        A sequence of identifiers, an object with ``.genes`` (a :class:`~scmulan.Vocabulary`), an object
        with ``.vocab.genes`` (a model), or a ``str`` naming a pretrained model or a saved model directory.

    Returns
    -------
    The genes in model order, and a description such as ``"Vocabulary (2000 genes)"``.
    """
    if isinstance(genes, str):
        from scmulan.model import resolve_model

        values, description = _attribute_genes(resolve_model(genes).vocab), genes
    elif hasattr(genes, "genes"):
        values, description = _attribute_genes(genes), type(genes).__name__
    elif hasattr(genes, "vocab") and hasattr(genes.vocab, "genes"):
        values, description = _attribute_genes(genes.vocab), type(genes).__name__
    elif isinstance(genes, Iterable) and not isinstance(genes, Mapping | bytes):
        values, description = list(genes), "list"
    else:
        msg = (
            f"`genes` must be None, a list of gene identifiers, a Vocabulary, a model or a model name, "
            f"got {type(genes).__name__}."
        )
        raise TypeError(msg)
    if len(values) == 0:
        msg = "`genes` is empty; pass the model's gene set, or `genes=None` to keep the dataset's own genes."
        raise ValueError(msg)
    if any(pd.isna(g) for g in values):
        msg = "`genes` contains missing values; pass a list of gene identifiers."
        raise ValueError(msg)
    values = [str(g) for g in values]
    return values, f"{description} ({len(values)} genes)"


def _attribute_genes(obj: Any) -> list[Any]:
    genes = obj.genes
    return list(genes() if callable(genes) else genes)


@dataclass
class GeneResolution:
    """Outcome of :func:`resolve_genes`, one entry per query identifier."""

    #: Normalised query identifiers (``None`` where missing).
    ids: np.ndarray
    #: Resolved gene (the model's spelling when a gene set is given), ``None`` when unresolved.
    genes: np.ndarray
    #: One of :data:`STATUSES` per identifier.
    status: np.ndarray
    #: Model genes in model order; ``None`` without a gene set.
    model_genes: list[str] | None = None
    #: Model genes found in the data, in model order.
    matched_model_genes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Number of identifiers with ``status``."""
        return int((self.status == status).sum())

    def examples(self, status: str, n: int = _N_EXAMPLES) -> list[str]:
        """Up to ``n`` identifiers with ``status`` (``"old->new"`` for those resolved to another name)."""
        idx = np.flatnonzero(self.status == status)[:n]
        if status in _RENAMING:
            return [f"{self.ids[i]}->{self.genes[i]}" for i in idx]
        return [str(self.ids[i]) for i in idx]

    def matched_by(self) -> dict[str, int]:
        """Resolved identifiers per matching rule: ``symbol``, ``ensembl_id``, ``alias``, ``suffix_stripped``."""
        return {rule: sum(self.count(s) for s in statuses) for rule, statuses in RULES.items()}


class _ModelMatcher:
    """Exact, then unique case-insensitive, lookup of identifiers in a model's gene set."""

    def __init__(self, model_genes: Sequence[str]) -> None:
        self.exact: dict[str, str] = {}
        by_lower: dict[str, set[str]] = defaultdict(set)
        for gene, key in zip(model_genes, normalize_gene_ids(model_genes), strict=True):
            if key is None:
                continue
            self.exact.setdefault(key, gene)
            by_lower[key.lower()].add(gene)
        self.lower = {k: next(iter(v)) for k, v in by_lower.items() if len(v) == 1}

    def match(self, key: str) -> tuple[str | None, str]:
        if key in self.exact:
            return self.exact[key], "kept"
        gene = self.lower.get(key.lower())
        return (gene, "case_matched") if gene is not None else (None, "not_in_model")


class _TableMatcher:
    """Model genes by Ensembl gene id (through a :class:`~scmulan.pp.GeneTable`), to match other names of a gene."""

    def __init__(self, table: GeneTable, model: _ModelMatcher) -> None:
        self.table = table
        self.model = model
        by_id: dict[int, set[str]] = defaultdict(set)
        for key, gene in model.exact.items():
            for number in table.ids_of(key)[0]:
                by_id[number].add(gene)
        self.by_id = by_id

    def match(self, key: str) -> tuple[str | None, str | None]:
        """The model gene another name of ``key``'s gene is, with the status; ``(None, None)`` if unknown."""
        ids, how = self.table.ids_of(key)
        if not ids:
            return None, None
        status = "ensembl_id" if how == "id" else "previous_symbol"
        if how == "id":  # the release's own name first, matched as a symbol is
            name = self.table.name_of(ids[0])
            gene = self.model.match(name)[0] if name is not None else None
            if gene is not None:
                return gene, status
        candidates = set().union(*(self.by_id.get(i, set()) for i in ids))
        if len(candidates) == 1:
            return next(iter(candidates)), status
        return (None, "ambiguous") if candidates else (None, "not_in_model")


def _strip_suffix(key: str) -> str | None:
    """``"TMBIM4-1"`` → ``"TMBIM4"`` (the suffix of anndata's ``var_names_make_unique``); ``None`` without one."""
    match = _MAKE_UNIQUE.match(key)
    return match.group(1) if match else None


def resolve_genes(
    ids: Iterable[Any],
    model_genes: Sequence[str] | None = None,
    aliases: pd.DataFrame | None = None,
    table: GeneTable | None = None,
) -> GeneResolution:
    """Resolve dataset gene identifiers to genes; a gene is never resolved for two identifiers.

    Rules, per normalised identifier (:func:`normalize_gene_ids`), in this order:

    1. With ``model_genes``: an exact match keeps it (``"kept"``); else a unique case-insensitive match
       (``"case_matched"``).
    2. With ``aliases`` (the original scMulan's uniforming rules), if still unresolved: an identifier that is
       itself a target symbol stays as it is (``"kept"`` without a gene set); otherwise the target symbols whose
       alias equals it are collected: exactly one → ``"renamed"`` (with a gene set, that symbol must then match
       it as in step 1); several → ``"ambiguous"``. Without a gene set, an identifier the alias table does not
       know is ``"unrecognised"``.
    3. With ``table`` and a gene set, if still unresolved: the Ensembl gene(s) the identifier names (an Ensembl
       id, a current or a previous symbol) are looked up among the model genes' Ensembl genes; one model gene →
       ``"ensembl_id"`` (the identifier is an id) or ``"previous_symbol"`` (another symbol of the same gene,
       older or newer); several → ``"ambiguous"``.
    4. A make-unique suffix (``TMBIM4-1``): when the identifier is neither a model gene nor known to ``table``
       and the identifier without ``-<digits>`` resolves by steps 1–3 (without a gene set: is a symbol
       ``table`` knows), it resolves to that gene (``"suffix_stripped"``).
    5. Without a gene set (and no alias table), every other identifier resolves to itself (``"kept"``).
       Unresolved identifiers are ``"not_in_model"`` when the alias table or ``table`` knows them as genes, else
       ``"unrecognised"`` (also every missing identifier).
    6. Several identifiers resolving to one gene: the best (in the order of :data:`STATUSES`), then the first in
       order, keeps it; the others become ``"duplicate"`` and unresolved.

    Parameters
    ----------
    ids
        The dataset's gene identifiers, in var order.
    model_genes
        The model's gene set (duplicates are ignored); ``None`` keeps the dataset's own genes.
    aliases
        Output of :func:`read_aliases`.
    table
        A gene table (:meth:`~scmulan.pp.GeneTable.load`) for Ensembl ids, previous symbols and make-unique
        suffixes; ``None`` matches by name only.

    Returns
    -------
    Per-identifier resolved genes and statuses, and the model genes found.
    """
    keys = normalize_gene_ids(ids)
    if model_genes is not None:
        model_genes = list(dict.fromkeys(model_genes))
    matcher = _ModelMatcher(model_genes) if model_genes is not None else None
    by_table = _TableMatcher(table, matcher) if table is not None and matcher is not None else None
    targets: set[str] = set()
    alias_to_symbols: dict[str, list[str]] = {}
    if aliases is not None:
        targets = set(aliases["symbol"])
        alias_to_symbols = aliases.groupby("alias", sort=False)["symbol"].agg(lambda s: sorted(set(s))).to_dict()

    def by_name(key: str) -> tuple[str | None, str]:
        """Steps 1-3: the gene ``key`` names, or why none."""
        known = False
        if matcher is not None:
            gene, status = matcher.match(key)
            if gene is not None:
                return gene, status
        if aliases is not None:
            candidates = alias_to_symbols.get(key, [])
            if key in targets:
                if matcher is None:
                    return key, "kept"
                known = True
            elif len(candidates) > 1:
                return None, "ambiguous"
            elif candidates:
                if matcher is None:
                    return candidates[0], "renamed"
                gene, _ = matcher.match(candidates[0])
                if gene is not None:
                    return gene, "renamed"
                known = True
            elif matcher is None:
                return None, "unrecognised"
        if matcher is None:
            return key, "kept"
        if by_table is not None:
            gene, status = by_table.match(key)
            if status is not None:
                return gene, status
        return None, "not_in_model" if known else "unrecognised"

    def resolve_one(key: str) -> tuple[str | None, str]:
        gene, status = by_name(key)
        base = _strip_suffix(key)
        if base is None or (table is not None and table.knows(key)):
            return gene, status
        if matcher is None:  # step 4 without a gene set: only towards a gene the table knows
            known_base = status == "kept" and table is not None and table.knows(base)
            return (base, "suffix_stripped") if known_base else (gene, status)
        if gene is not None or status != "unrecognised":
            return gene, status
        base_gene, _ = by_name(base)
        return (base_gene, "suffix_stripped") if base_gene is not None else (gene, status)

    genes = np.full(keys.size, None, dtype=object)
    status = np.full(keys.size, "unrecognised", dtype=object)
    cache: dict[str, tuple[str | None, str]] = {}
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key not in cache:
            cache[key] = resolve_one(key)
        genes[i], status[i] = cache[key]

    _mark_duplicates(genes, status)
    matched = set(genes[pd.notna(genes)])
    matched_model = [g for g in model_genes if g in matched] if model_genes is not None else []
    return GeneResolution(
        ids=keys,
        genes=genes,
        status=status,
        model_genes=model_genes,
        matched_model_genes=matched_model,
    )


def _mark_duplicates(genes: np.ndarray, status: np.ndarray) -> None:
    """In place: keep one identifier per resolved gene (best status, then first), unresolve the others."""
    resolved = np.flatnonzero(pd.notna(genes))
    if resolved.size == 0:
        return
    frame = pd.DataFrame(
        {
            "gene": genes[resolved],
            "rank": pd.Categorical(status[resolved], categories=_RESOLVED, ordered=True).codes,
            "pos": resolved,
        }
    )
    frame = frame.sort_values(["rank", "pos"], kind="stable")
    losers = frame.loc[frame["gene"].duplicated(keep="first"), "pos"].to_numpy()
    genes[losers] = None
    status[losers] = "duplicate"
