""":func:`scmulan.pp.prepare`: the AnnData-facing runner over the value checks, normalisation and gene matching."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import ImplicitModificationWarning
from scipy import sparse

from scmulan._anndata import check_not_backed, copy_data, get_modality, is_mudata
from scmulan._data_kind import LOG_NORMALIZED_MAX, summarize_matrix
from scmulan._validation import refuse_misprocessed
from scmulan._warnings import warn
from scmulan.sentence import normalize_log1p

from ._gene_report import print_gene_report
from ._gene_source import detect_gene_column
from ._gene_table import SHIPPED_RELEASE, GeneTable, load_gene_table
from ._genes import STATUSES, AliasesLike, model_gene_list, normalize_gene_ids, read_aliases, resolve_genes

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

TARGET_SUM = 1e4
_WARN_OVERLAP = 0.5
_N_SHOWN = 5


def prepare(
    adata: AnnData | MuData,
    genes: Any = None,
    *,
    layer: str | None = None,
    gene_symbols: str | None = None,
    aliases: AliasesLike | None = None,
    gene_table: GeneTable | str | Path | None = SHIPPED_RELEASE,
    min_overlap: float = 0.05,
    mod: str = "rna",
    copy: bool = False,
) -> AnnData | MuData | None:
    """Validate expression data, log-normalise it if needed, and match its genes to a model's gene set.

    This is the preprocessing the original scMulan (Bian et al., RECOMB 2024) expects: raw counts are
    normalised to 1e4 counts per cell and ``log1p``-transformed on the full gene space, *before* genes are
    matched, and gene identifiers are uniformed (``_`` → ``-``, optional alias table). The kind of data is
    recognised from its stored values:

    - raw counts (non-negative integers): ``normalize_total(target_sum=1e4)`` + ``log1p``;
    - non-integer unlogged data such as TPM/CPM (maximum above 15): the same, with a warning;
    - log-normalised data (``expm1`` of each cell's values whole multiples of one factor): left unchanged;
    - log1p of raw counts (``expm1`` gives whole numbers, the cells' totals differ), counts divided by a constant
      or normalised to a small total without ``log1p`` (e.g. ``counts / 100``), scaled data (negative values, or
      unit variance per gene as ``sc.pp.scale(zero_center=False)`` leaves it), NaN or infinite values, an empty
      or all-zero matrix: a :class:`ValueError` naming the fix;
    - other non-integer data up to 15 (e.g. imputed or ``log2``): used as log-normalised, with a warning.

    The table in the FAQ ("Which input does scmulan accept?") lists how each kind is detected.

    Genes are resolved from ``var_names`` (or ``var[gene_symbols]``; without ``gene_symbols``, a common
    symbol column such as CELLxGENE's ``var['feature_name']`` is used instead when it matches more model
    genes, and the report says so): Ensembl version suffixes are stripped and ``_`` becomes ``-``. Given a
    model's gene set, an identifier matches a model gene exactly, else by a unique case-insensitive match,
    else (with ``aliases``) through the alias table by the original's rules (an identifier that is already a
    target symbol is kept; otherwise the symbols it is an alias of are collected — exactly one renames it,
    several make it ``"ambiguous"``), else through ``gene_table``: a human Ensembl gene id, or a previous (or
    newer) symbol of a model gene, matches that gene. A make-unique suffix (``TMBIM4-1``) is stripped when the
    suffixed name is no known gene and its base is a model gene. Without a gene set every identifier resolves
    to itself (after the alias rules, if given; a make-unique suffix on a known gene is stripped): that is
    how a new model's gene set is built from the data. The overlap report (how many genes each rule matched,
    and why the others were not) is printed at Scanpy's default verbosity (``scanpy.settings.verbosity = 0``
    silences it) and kept in ``uns['scmulan_prepare']``. A gene never resolves for two
    vars: among duplicates, an exact match wins over a case-insensitive one over an alias, then the first
    var; the others are left unresolved, with a warning. Genes are not subset or reordered here: model
    genes missing from the data count as zero expression downstream.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality ``mod`` holds the RNA data. A backed AnnData needs ``copy=True``
        (the copy is loaded into memory).
    genes
        The model's gene set to match:

        - ``None``: keep the dataset's own genes (for training a new model);
        - a sequence of gene identifiers (list, array, :class:`pandas.Index`);
        - a :class:`~scmulan.Vocabulary` (its ``.genes``) or a model (its ``.vocab.genes``);
        - a pretrained model name or a saved model directory (``str``).
    layer
        Layer holding the expression to use; ``None`` uses ``X``.
    gene_symbols
        Column of ``var`` holding the gene identifiers to match; ``None`` uses ``var_names``.
    aliases
        Optional alias table mapping aliases (or previous symbols) to symbols: a two-column DataFrame
        (``alias``, ``symbol``), a mapping alias → symbol, or a path to a CSV/TSV file with a header.
    gene_table
        Human gene table for Ensembl ids, previous symbols and make-unique suffixes: ``"gencode-v44"`` (shipped
        with scmulan, offline), a :class:`~scmulan.pp.GeneTable` (e.g. a newer release from
        :meth:`~scmulan.pp.GeneTable.load`), a file path, or ``None`` to match by name only.
    min_overlap
        Smallest fraction of the model's genes that must be found in the data; below it a
        :class:`ValueError` is raised. Below 0.5 a warning is issued. Only used with ``genes``.
    mod
        Modality of a MuData input; ignored for AnnData.
    copy
        Return a prepared copy instead of writing into ``adata``.

    Returns
    -------
    A prepared copy (AnnData or MuData) if ``copy=True``, else ``None``. Written to the AnnData (for
    MuData: to ``mdata.mod[mod]``):

    ``adata.X`` : float32, same sparsity as the source (sparse becomes CSR)
        Log-normalised expression. Untouched when ``X`` already was log-normalised; a copy of the layer
        when ``layer`` was log-normalised.
    ``adata.layers['counts']``
        The original ``X`` when it held counts and no ``'counts'`` layer existed (``layers['unlogged']`` for
        TPM-like values), so that replacing ``X`` loses nothing; a layer already there is never overwritten.
    ``adata.var['scmulan_gene']`` : categorical
        The resolved gene per var (the model's spelling when ``genes`` is given); NaN when unresolved. Select
        resolved vars with ``adata.var['scmulan_gene'].notna()``.
    ``adata.var['scmulan_gene_status']`` : categorical
        Resolved: ``"kept"`` (same symbol), ``"case_matched"``, ``"renamed"`` (``aliases``), ``"ensembl_id"``,
        ``"previous_symbol"`` (another symbol of the same Ensembl gene), ``"suffix_stripped"``; unresolved:
        ``"ambiguous"``, ``"not_in_model"`` (a known gene the model lacks), ``"unrecognised"`` (no known gene
        identifier) or ``"duplicate"``.
    ``adata.uns['scmulan_prepare']`` : dict
        The report: ``data_kind``, ``normalized``, ``source`` (``"X"`` or ``"layers['…']"``),
        ``original_layer`` (the layer the original ``X`` was kept in, ``""`` if none), ``n_obs``,
        ``n_vars``, ``n_resolved``, ``n_<status>`` per status, a list of examples per status but ``kept``
        (≤20 each; ``"old->new"`` for those matched under another name), ``matched_by`` (resolved vars per
        rule: ``symbol``, ``ensembl_id``, ``alias``, ``suffix_stripped``), ``gene_table`` (its release, ``""``
        if none) and ``gene_column_note`` (when a ``var`` column was chosen automatically); with ``genes``
        also ``n_model_genes``, ``n_overlap``, ``overlap_fraction`` and ``missing_genes`` (every model gene
        absent from the data, in model order); and ``params`` (the parameters that were set).

    Examples
    --------
    >>> import scanpy as sc, scmulan
    >>> adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    >>> scmulan.pp.prepare(adata)
    >>> adata.uns["scmulan_prepare"]["data_kind"]
    'log_normalized'
    """
    if copy:
        adata = copy_data(adata, mod=mod)
    target = get_modality(adata, mod)
    check_not_backed(target, where="scmulan.pp.prepare")
    if target.is_view:
        # what anndata does on the first write to a view, done up front so that the matrix read below
        # (and kept as layers['counts']) is the actual object, not a view of the parent
        msg = "Received a view of an AnnData; initializing it as actual before writing results."
        warn(msg, ImplicitModificationWarning)
        target._init_as_actual(target.copy())
    start = time.perf_counter()
    logger.info("computing scmulan inputs: checking values, normalising and matching genes")

    # --- validate everything before writing anything
    if not 0 <= min_overlap <= 1:
        msg = f"`min_overlap` must be a fraction between 0 and 1, got {min_overlap!r}."
        raise ValueError(msg)
    if target.n_obs == 0 or target.n_vars == 0:
        msg = (
            f"`adata` is empty ({target.n_obs} cells × {target.n_vars} genes); "
            "pass data with at least one cell and one gene."
        )
        raise ValueError(msg)
    matrix, source = _source_matrix(target, layer)
    ids = _query_ids(target, gene_symbols)
    model_genes, genes_description, n_duplicated_model = _model_genes(genes)
    alias_table = read_aliases(aliases) if aliases is not None else None

    summary = summarize_matrix(matrix, name=source, max_rows=None)
    refuse_misprocessed(summary, name=source)
    table = load_gene_table(gene_table) if gene_table is not None else None
    resolution = resolve_genes(ids, model_genes, alias_table, table)
    gene_column_note = ""
    if gene_symbols is None and model_genes is not None:
        detected = detect_gene_column(
            target.var, resolution, lambda column: resolve_genes(column, model_genes, alias_table, table)
        )
        if detected is not None:
            gene_symbols, resolution, gene_column_note = detected
    report = _report(resolution, summary.kind, source, target)
    report.update(matched_by=resolution.matched_by(), gene_table=table.release if table is not None else "")
    if gene_column_note:
        report["gene_column_note"] = gene_column_note
    if model_genes is not None:
        _check_overlap(report, target, model_genes, gene_symbols, min_overlap)
        if report["overlap_fraction"] < _WARN_OVERLAP:
            msg = (
                f"Only {report['n_overlap']} of the model's {report['n_model_genes']} genes "
                f"({report['overlap_fraction']:.2%}) were found in the data; the missing ones count as zero "
                "expression, which may lower the quality of the results. See "
                "`uns['scmulan_prepare']['missing_genes']`; `gene_symbols=` or `aliases=` may recover more."
            )
            warn(msg, UserWarning)
    if n_duplicated_model:
        msg = f"`genes` lists {n_duplicated_model} duplicated gene(s); each is matched once."
        warn(msg, UserWarning)

    n_duplicate = report["n_duplicate"]
    if n_duplicate:
        msg = (
            f"{n_duplicate} var(s) resolve to a gene already taken by another var "
            f"(e.g. {', '.join(resolution.examples('duplicate', _N_SHOWN))}); each gene is used once, the others "
            "are left unresolved in `var['scmulan_gene']`. Sum or drop duplicated genes first to choose yourself."
        )
        warn(msg, UserWarning)
    if summary.kind == "unlogged_nonint":
        msg = (
            f"`{source}` holds non-integer values up to {summary.max_value:g} (above {LOG_NORMALIZED_MAX:g}), "
            "i.e. unlogged data such as TPM/CPM; treating it like counts: normalize_total(1e4) + log1p."
        )
        warn(msg, UserWarning)

    # --- compute
    normalize = summary.kind in {"counts", "unlogged_nonint"}
    if normalize:
        logger.info("    %s holds %s: normalize_total(target_sum=1e4) + log1p", source, summary.kind.replace("_", " "))
        new_x = normalize_log1p(matrix, target_sum=TARGET_SUM)
    elif layer is not None:
        new_x = _as_float32(matrix)
    else:
        new_x = None  # X already log-normalised: left as it is

    # --- write
    added = []
    original_layer = ""  # where the original X is kept when X is replaced
    if normalize and layer is None:
        key = "counts" if summary.kind == "counts" else "unlogged"
        if key not in target.layers:
            target.layers[key] = matrix  # the original X object; X itself gets a new matrix below
            original_layer = key
            added.append(f"layers[{key!r}]")
    if new_x is not None:
        target.X = new_x
        added.append("X")
    report["normalized"] = normalize
    report["original_layer"] = original_layer
    report["params"] = _params(
        genes=genes_description,
        layer=layer,
        gene_symbols=gene_symbols,
        aliases=_aliases_description(aliases, alias_table),
        gene_table=table.release if table is not None else None,
        min_overlap=float(min_overlap),
        mod=mod if is_mudata(adata) else None,
    )
    # categorical (NaN = unresolved): writes to .h5ad with any anndata, unlike pandas' nullable string dtype
    target.var["scmulan_gene"] = pd.Categorical(pd.array(resolution.genes, dtype="string").to_numpy(na_value=None))
    target.var["scmulan_gene_status"] = pd.Categorical(resolution.status, categories=STATUSES)
    target.uns["scmulan_prepare"] = report
    print_gene_report(report)
    added += ["var['scmulan_gene']", "var['scmulan_gene_status']", "uns['scmulan_prepare']"]

    elapsed = timedelta(seconds=round(time.perf_counter() - start))
    logger.info("    finished (%s): added %s", elapsed, ", ".join(added))
    return adata if copy else None


def _source_matrix(adata: AnnData, layer: str | None) -> tuple[Any, str]:
    if layer is None:
        if adata.X is None:
            msg = f"`adata.X` is empty (None); pass the expression via `layer=` (layers: {list(adata.layers)})."
            raise ValueError(msg)
        return adata.X, "X"
    if layer not in adata.layers:
        msg = f"`layer={layer!r}` not found; available layers: {list(adata.layers) or 'none'}. Use `layer=None` for X."
        raise ValueError(msg)
    return adata.layers[layer], f"layers[{layer!r}]"


def _query_ids(adata: AnnData, gene_symbols: str | None) -> pd.Index | pd.Series:
    if gene_symbols is None:
        return adata.var_names
    if gene_symbols not in adata.var.columns:
        msg = (
            f"`gene_symbols={gene_symbols!r}` is not a column of `var`; available columns: "
            f"{list(adata.var.columns) or 'none'}. Use `gene_symbols=None` for var_names."
        )
        raise ValueError(msg)
    return adata.var[gene_symbols].astype(object)


def _model_genes(genes: Any) -> tuple[list[str] | None, str | None, int]:
    """The model's genes without duplicates, their description, and the number of duplicates dropped."""
    if genes is None:
        return None, None, 0
    values, description = model_gene_list(genes)
    unique = list(dict.fromkeys(values))
    return unique, description, len(values) - len(unique)


def _as_float32(matrix: Any) -> Any:
    """A float32 copy, sparse as CSR."""
    if sparse.issparse(matrix):
        return matrix.tocsr().astype(np.float32, copy=True)
    return np.array(matrix, dtype=np.float32)


def _report(resolution: Any, kind: str, source: str, adata: AnnData) -> dict[str, Any]:
    report: dict[str, Any] = {
        "data_kind": kind,
        "source": source,
        "n_obs": int(adata.n_obs),
        "n_vars": int(adata.n_vars),
        "n_resolved": int(pd.notna(resolution.genes).sum()),
    }
    for status in STATUSES:
        report[f"n_{status}"] = resolution.count(status)
    for status in STATUSES[1:]:
        report[status] = resolution.examples(status)
    if resolution.model_genes is not None:
        n_model = len(resolution.model_genes)
        n_overlap = len(resolution.matched_model_genes)
        matched = set(resolution.matched_model_genes)
        report["n_model_genes"] = n_model
        report["n_overlap"] = n_overlap
        report["overlap_fraction"] = n_overlap / n_model
        report["missing_genes"] = [g for g in resolution.model_genes if g not in matched]
    return report


def _check_overlap(
    report: dict[str, Any], adata: AnnData, model_genes: list[str], gene_symbols: str | None, min_overlap: float
) -> None:
    """Raise if less than ``min_overlap`` of the model's genes were found, with examples and a hint."""
    n_overlap, n_model, fraction = report["n_overlap"], report["n_model_genes"], report["overlap_fraction"]
    logger.info("    %d of %d model genes (%.2f%%) found in the data", n_overlap, n_model, 100 * fraction)
    if fraction >= min_overlap:
        return
    data_ids = [str(i) for i in normalize_gene_ids(_query_ids(adata, gene_symbols)[:_N_SHOWN])]
    msg = (
        f"Only {n_overlap} of the model's {n_model} genes ({fraction:.2%}) were found in the data, "
        f"below `min_overlap={min_overlap:g}`. Data identifiers look like {data_ids}; "
        f"model genes like {model_genes[:_N_SHOWN]}. "
    )
    better = _better_gene_source(adata, model_genes, gene_symbols, n_overlap)
    if better is not None:
        column, n = better
        where = "var_names" if column is None else f"var[{column!r}]"
        msg += f"{where} matches {n} model genes: pass `gene_symbols={column!r}`. "
    msg += (
        "Pass `gene_symbols=` to use a var column of gene symbols, `aliases=` to map aliases/previous "
        "symbols, or lower `min_overlap`."
    )
    raise ValueError(msg)


def _better_gene_source(
    adata: AnnData, model_genes: list[str], gene_symbols: str | None, n_current: int
) -> tuple[str | None, int] | None:
    """The identifier source (var_names or a string var column) matching the most model genes, if better."""
    sources: dict[str | None, Any] = {}
    if gene_symbols is not None:
        sources[None] = adata.var_names
    for column in adata.var.columns:
        values = adata.var[column]
        if column != gene_symbols and (
            pd.api.types.is_object_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype | pd.StringDtype)
        ):
            sources[column] = values.astype(object)
    best = None
    for column, ids in sources.items():
        n = len(resolve_genes(ids, model_genes).matched_model_genes)
        if n > n_current and (best is None or n > best[1]):
            best = (column, n)
    return best


def _params(**params: Any) -> dict[str, Any]:
    """The parameters that were set (``None`` is left out: it cannot be written to h5ad by every anndata)."""
    return {k: v for k, v in params.items() if v is not None}


def _aliases_description(aliases: Any, table: pd.DataFrame | None) -> str | None:
    if aliases is None or table is None:
        return None
    if isinstance(aliases, str | Path):
        return str(aliases)
    kind = "DataFrame" if isinstance(aliases, pd.DataFrame) else "mapping" if isinstance(aliases, Mapping) else "table"
    return f"{kind} ({len(table)} aliases)"
