"""`scmulan.pp.prepare` with the shipped gene table: Ensembl-indexed data, previous symbols, make-unique suffixes,
`not_in_model` vs `unrecognised`, a Census-style `feature_name` column, and the printed overlap report."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import scmulan
from scmulan.pp import GeneTable, prepare


@pytest.fixture
def scanpy_log():
    """Scanpy's log file as a StringIO (restored afterwards, with the verbosity)."""
    old_file, old_verbosity = sc.settings.logfile, sc.settings.verbosity
    buffer = io.StringIO()
    sc.settings.logfile = buffer
    yield buffer
    sc.settings.logfile = old_file
    sc.settings.verbosity = old_verbosity


@pytest.fixture(scope="module")
def pbmc():
    return scmulan.datasets.pbmc68k()


def ensembl_copy(adata):
    """The data indexed by Ensembl gene id (every third with a version) where the shipped table knows the symbol."""
    table = GeneTable.load()
    names, known = [], []
    for i, symbol in enumerate(adata.var_names):
        ids, _ = table.ids_of(symbol)
        known.append(bool(ids))
        names.append(f"ENSG{ids[0]:011d}" + (f".{i % 7 + 1}" if i % 3 == 0 else "") if ids else symbol)
    copy = adata.copy()
    copy.var["original_symbol"] = np.asarray(adata.var_names)  # not a column prepare looks at by itself
    copy.var_names = names
    return copy, np.array(known)


def test_ensembl_indexed_pbmc_reaches_the_symbol_overlap(pbmc, scanpy_log):
    model = list(pbmc.var_names)  # a model that names its genes as pbmc68k does (older symbols included)
    by_symbol = prepare(pbmc, genes=model, copy=True).uns["scmulan_prepare"]
    ensembl, known = ensembl_copy(pbmc)
    assert known.sum() > 700  # the table knows the id of nearly every gene
    prepared = prepare(ensembl, genes=model, copy=True)
    report = prepared.uns["scmulan_prepare"]
    assert report["n_overlap"] == by_symbol["n_overlap"] == len(model)
    # every gene whose id the table knows is matched to its own symbol, including older ones (SEPT7 is SEPTIN7)
    gene = prepared.var["scmulan_gene"].astype(object).to_numpy()
    assert (gene[known] == prepared.var["original_symbol"].to_numpy()[known]).all()
    assert "SEPT7" in set(gene[known])
    status = prepared.var["scmulan_gene_status"].to_numpy()
    assert set(status[known]) == {"ensembl_id"}
    assert report["matched_by"] == {"symbol": int((~known).sum()), "ensembl_id": int(known.sum()), "alias": 0,
                                    "suffix_stripped": 0}  # fmt: skip
    printed = scanpy_log.getvalue()
    assert f"{len(model)} of the model's {len(model)} genes (100.00%) found" in printed
    assert f"Ensembl id {int(known.sum())} (e.g. ENSG" in printed


def test_older_symbols_match_a_model_with_current_ones(pbmc):
    table = GeneTable.load()
    # the model names genes by their GENCODE v44 names: SEPTIN7, not pbmc68k's SEPT7
    current = {s: table.name_of(table.ids_of(s)[0][0]) for s in pbmc.var_names if table.ids_of(s)[0]}
    model = sorted({n for n in current.values() if n is not None})
    report = prepare(pbmc, genes=model, copy=True, gene_table=None).uns["scmulan_prepare"]
    prepared = prepare(pbmc, genes=model, copy=True)
    with_table = prepared.uns["scmulan_prepare"]
    assert with_table["n_overlap"] > report["n_overlap"] + 40  # the renamed genes are found again
    var = prepared.var
    assert var.loc["SEPT7", "scmulan_gene"] == "SEPTIN7"
    assert var.loc["SEPT7", "scmulan_gene_status"] == "previous_symbol"
    assert "SEPT7->SEPTIN7" in with_table["previous_symbol"]
    assert with_table["matched_by"]["alias"] == with_table["n_previous_symbol"] > 40


def test_make_unique_suffix_is_stripped_and_reported(pbmc, scanpy_log):
    assert "TMBIM4-1" in pbmc.var_names
    assert "TMBIM4" not in pbmc.var_names
    new_model = prepare(pbmc, copy=True)  # no gene set: a new model's genes come from the data
    assert new_model.var.loc["TMBIM4-1", "scmulan_gene"] == "TMBIM4"
    assert new_model.var.loc["TMBIM4-1", "scmulan_gene_status"] == "suffix_stripped"
    assert new_model.uns["scmulan_prepare"]["suffix_stripped"] == ["TMBIM4-1->TMBIM4"]
    assert "suffix stripped 1 (e.g. TMBIM4-1->TMBIM4)" in scanpy_log.getvalue()
    with_model = prepare(pbmc, genes=["TMBIM4", "CD3E"], copy=True, min_overlap=0)
    assert with_model.var.loc["TMBIM4-1", "scmulan_gene"] == "TMBIM4"
    assert with_model.uns["scmulan_prepare"]["matched_by"]["suffix_stripped"] == 1


def test_suffix_rules_keep_real_genes_and_unsuffixed_names():
    from scmulan.pp._genes import resolve_genes

    table = GeneTable.load()
    # NKX2-1 is a gene of its own: never stripped; a model gene spelled with the suffix stays as it is
    res = resolve_genes(["NKX2-1", "TMBIM4-1", "TMBIM4", "CD3E-2"], ["NKX2", "TMBIM4", "CD3E-2"], table=table)
    assert list(res.status) == ["not_in_model", "duplicate", "kept", "kept"]
    assert list(res.genes) == [None, None, "TMBIM4", "CD3E-2"]
    # without a gene table, the base must be a model gene
    res = resolve_genes(["TMBIM4-1", "XYZ-1"], ["TMBIM4"])
    assert list(res.status) == ["suffix_stripped", "unrecognised"]


def test_not_in_model_vs_unrecognised():
    adata = sc.AnnData(
        np.ones((3, 5), dtype=np.float32) * np.array([1, 2, 3, 4, 5], dtype=np.float32),
        var=pd.DataFrame(index=["CD3E", "ENSG00000141510", "NOTAGENE1", "ENSG00000000000", "MS4A1"]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # low overlap
        prepare(adata, genes=["MS4A1", "GNLY"], min_overlap=0)
    status = list(adata.var["scmulan_gene_status"])
    # CD3E and TP53's id are genes the model lacks; the others name no known gene
    assert status == ["not_in_model", "not_in_model", "unrecognised", "unrecognised", "kept"]
    report = adata.uns["scmulan_prepare"]
    assert (report["n_not_in_model"], report["n_unrecognised"]) == (2, 2)
    assert report["unrecognised"] == ["NOTAGENE1", "ENSG00000000000"]


def test_census_feature_name_column_is_found(pbmc, scanpy_log):
    census = pbmc.copy()
    census.var["feature_name"] = pd.Categorical(pbmc.var_names)
    census.var_names = [f"ENSG9{i:010d}" for i in range(pbmc.n_vars)]  # ids no release knows
    prepare(census, genes=list(pbmc.var_names))
    report = census.uns["scmulan_prepare"]
    assert report["n_overlap"] == pbmc.n_vars
    assert report["params"]["gene_symbols"] == "feature_name"
    assert "var['feature_name'] (found automatically" in report["gene_column_note"]
    assert "pass `gene_symbols=` to choose" in scanpy_log.getvalue()


def test_report_is_printed_at_default_verbosity_and_silenced_at_zero(pbmc, scanpy_log):
    model = list(pbmc.var_names[:300])
    sc.settings.verbosity = 1  # Scanpy's default
    prepare(pbmc, genes=model, copy=True)
    printed = scanpy_log.getvalue()
    assert printed.startswith("scmulan.pp.prepare: 300 of the model's 300 genes (100.00%) found in the data")
    assert "matched by symbol 300, Ensembl id 0, alias 0, suffix stripped 0" in printed
    # pbmc68k's old clone-based names (RP11-…) are no gene the table knows
    assert "not matched: 457 not in model, 8 unrecognised (e.g. RP11-" in printed
    scanpy_log.truncate(0)
    scanpy_log.seek(0)
    sc.settings.verbosity = 0
    prepare(pbmc, genes=model, copy=True)
    assert scanpy_log.getvalue() == ""


def test_gene_table_none_matches_by_name_only(pbmc, scanpy_log):
    prepare(pbmc, genes=list(pbmc.var_names[:300]), gene_table=None, copy=True)
    assert "465 unrecognised (e.g. " in scanpy_log.getvalue()
    assert (
        "(no gene table: genes the model lacks are not told apart; gene_table=None was passed)" in scanpy_log.getvalue()
    )
    ensembl, known = ensembl_copy(pbmc)
    with pytest.raises(ValueError, match="below `min_overlap=0.05`"):
        prepare(ensembl, genes=list(pbmc.var_names), gene_table=None, copy=True)
    prepared = prepare(ensembl, genes=list(pbmc.var_names), copy=True)
    assert prepared.uns["scmulan_prepare"]["gene_table"] == "gencode-v44"
    assert prepared.uns["scmulan_prepare"]["params"]["gene_table"] == "gencode-v44"


def test_original_scmulan_gene_set(pbmc, legacy_vocab):
    # the original 2,000 genes name 9 of pbmc68k's genes by newer symbols: found only through the gene table; an
    # Ensembl-indexed copy reaches the same overlap, and none without the table
    genes = legacy_vocab.genes

    def overlap(adata, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # low overlap
            report = prepare(adata, genes=genes, copy=True, min_overlap=0, **kwargs).uns["scmulan_prepare"]
        return report["n_overlap"], report["matched_by"]

    assert overlap(pbmc, gene_table=None)[0] == 193
    n, matched_by = overlap(pbmc)
    assert (n, matched_by["symbol"], matched_by["alias"]) == (202, 193, 9)
    ensembl, _ = ensembl_copy(pbmc)
    assert overlap(ensembl) == (202, {"symbol": 0, "ensembl_id": 202, "alias": 0, "suffix_stripped": 0})
    assert overlap(ensembl, gene_table=None)[0] == 0
