"""`scmulan.pp.prepare`: gene resolution written to `var`, the overlap report and its thresholds."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scmulan.pp import prepare


def make_adata(var_names, **var_columns) -> ad.AnnData:
    rng = np.random.default_rng(1)
    x = rng.poisson(2.0, size=(12, len(var_names))).astype(np.float32)
    x[0, 0] = 3.0
    var = pd.DataFrame(var_columns, index=pd.Index(var_names))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Variable names are not unique")
        return ad.AnnData(sparse.csr_matrix(x), var=var)


def test_var_columns_without_model(counts_adata, tmp_path):
    prepare(counts_adata)
    gene = counts_adata.var["scmulan_gene"]
    assert isinstance(gene.dtype, pd.CategoricalDtype)
    counts_adata.write_h5ad(tmp_path / "prepared.h5ad")  # the report and columns must be writable
    back = ad.read_h5ad(tmp_path / "prepared.h5ad")
    assert list(back.var["scmulan_gene"]) == list(gene)
    assert list(gene) == list(counts_adata.var_names)  # without a gene set, ids resolve to themselves
    assert set(counts_adata.var["scmulan_gene_status"]) == {"kept"}
    report = counts_adata.uns["scmulan_prepare"]
    assert report["n_resolved"] == report["n_vars"] == counts_adata.n_vars
    assert "n_overlap" not in report


def test_identifier_rules():
    adata = make_adata(["ENSG00000141510.16", "HLA_A", "cd3e", "MS4A1", "UNKNOWN1"])
    model = ["ENSG00000141510", "HLA-A", "CD3E", "MS4A1", "GNLY"]
    prepare(adata, genes=model, min_overlap=0.0)
    assert [None if pd.isna(g) else g for g in adata.var["scmulan_gene"]] == [
        "ENSG00000141510",
        "HLA-A",
        "CD3E",
        "MS4A1",
        None,
    ]
    assert list(adata.var["scmulan_gene_status"]) == ["kept", "kept", "case_matched", "kept", "unrecognised"]
    report = adata.uns["scmulan_prepare"]
    assert report["n_case_matched"] == 1
    assert report["case_matched"] == ["cd3e->CD3E"]
    assert report["n_unrecognised"] == 1
    assert report["missing_genes"] == ["GNLY"]


def test_gene_symbols_column():
    adata = make_adata(["ENSG1", "ENSG2", "ENSG3"], symbol=["CD3E", np.nan, "MS4A1"])
    prepare(adata, genes=["CD3E", "MS4A1"], gene_symbols="symbol")
    assert adata.var["scmulan_gene"].isna().tolist() == [False, True, False]
    assert adata.uns["scmulan_prepare"]["params"]["gene_symbols"] == "symbol"


def test_aliases_unique_ambiguous_unknown(tmp_path):
    table = pd.DataFrame({"alias": ["P53", "AMB", "AMB"], "symbol": ["TP53", "GENEA", "GENEB"]})
    path = tmp_path / "aliases.tsv"
    table.to_csv(path, sep="\t", index=False)
    adata = make_adata(["P53", "AMB", "XYZ", "CD3E"])
    with pytest.warns(UserWarning, match="were found in the data"):  # 3 of 6 model genes: below 0.5
        prepare(adata, genes=["TP53", "GENEA", "GENEB", "CD3E", "A", "B"], aliases=path)
    assert list(adata.var["scmulan_gene_status"]) == ["renamed", "ambiguous", "unrecognised", "kept"]
    report = adata.uns["scmulan_prepare"]
    assert (report["n_renamed"], report["n_ambiguous"], report["n_unrecognised"]) == (1, 1, 1)
    assert report["renamed"] == ["P53->TP53"]
    assert report["ambiguous"] == ["AMB"]
    assert report["params"]["aliases"] == str(path)


def test_duplicates_warned_and_never_mapped_twice():
    adata = make_adata(["CD3E", "MS4A1", "CD3E", "ms4a1", "GNLY"])
    with pytest.warns(UserWarning, match=r"2 var\(s\) resolve to a gene already taken"):
        prepare(adata, genes=["CD3E", "MS4A1", "GNLY"])
    gene = adata.var["scmulan_gene"]
    resolved = gene[gene.notna()]
    assert resolved.is_unique
    assert list(gene.notna()) == [True, True, False, False, True]
    assert adata.uns["scmulan_prepare"]["n_duplicate"] == 2
    assert adata.uns["scmulan_prepare"]["n_overlap"] == 3


def test_overlap_report_numbers(pbmc_log):
    rng = np.random.default_rng(0)
    present = list(rng.choice(pbmc_log.var_names, size=500, replace=False))
    model = present + [f"ABSENT{i}" for i in range(300)]
    rng.shuffle(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 62.5 % overlap: no warning
        prepare(pbmc_log, genes=model)
    report = pbmc_log.uns["scmulan_prepare"]
    data_genes = set(pbmc_log.var_names)
    expected_missing = [g for g in model if g not in data_genes]
    assert report["n_model_genes"] == len(model)
    assert report["n_overlap"] == len(set(model) & data_genes)
    assert report["overlap_fraction"] == pytest.approx(len(set(model) & data_genes) / len(model))
    assert report["missing_genes"] == expected_missing
    assert report["n_resolved"] == int(pbmc_log.var_names.isin(model).sum())
    assert pbmc_log.var["scmulan_gene"].notna().sum() == report["n_resolved"]


@pytest.mark.parametrize("form", ["list", "array", "index", "vocab", "model"])
def test_genes_forms(pbmc_log, form):
    genes = list(pbmc_log.var_names[::2])

    class Vocabulary:
        def __init__(self, genes):
            self.genes = genes

    class Model:
        def __init__(self, genes):
            self.vocab = Vocabulary(genes)

    value = {
        "list": genes,
        "array": np.array(genes),
        "index": pd.Index(genes),
        "vocab": Vocabulary(genes),
        "model": Model(genes),
    }[form]
    prepare(pbmc_log, genes=value)
    assert pbmc_log.uns["scmulan_prepare"]["n_overlap"] == len(genes)
    assert list(pbmc_log.var["scmulan_gene"].dropna()) == genes


def test_original_pbmc_overlap_passes_with_warning(pbmc_log):
    # the real case: PBMC data against the original 2,000-gene set overlaps in 193 genes (9.65 %)
    model = list(pbmc_log.var_names[:193]) + [f"MODELGENE{i}" for i in range(1807)]
    with pytest.warns(UserWarning, match=r"Only 193 of the model's 2000 genes \(9\.65%\)"):
        prepare(pbmc_log, genes=model)
    assert pbmc_log.uns["scmulan_prepare"]["overlap_fraction"] == pytest.approx(0.0965)


def test_overlap_below_threshold_raises_and_suggests_column(pbmc_log):
    symbols = pbmc_log.var_names.copy()
    pbmc_log.var["my_names"] = symbols  # a column prepare does not look at by itself (it does at "feature_name")
    pbmc_log.var_names = [f"ENSG{i:011d}.1" for i in range(pbmc_log.n_vars)]
    before = pbmc_log.var.copy()
    with pytest.raises(ValueError, match=r"Only 0 of the model's 765 genes \(0\.00%\).*min_overlap=0\.05") as info:
        prepare(pbmc_log, genes=list(symbols))
    message = str(info.value)
    assert "ENSG00000000000" in message  # example data ids
    assert symbols[0] in message  # example model genes
    assert "gene_symbols='my_names'" in message
    assert "aliases=" in message
    pd.testing.assert_frame_equal(pbmc_log.var, before)  # nothing written
    assert "scmulan_prepare" not in pbmc_log.uns
    prepare(pbmc_log, genes=list(symbols), gene_symbols="my_names")  # the suggested fix works
    assert pbmc_log.uns["scmulan_prepare"]["overlap_fraction"] == 1.0


def test_min_overlap_is_the_boundary(pbmc_log):
    model = list(pbmc_log.var_names[:10]) + [f"X{i}" for i in range(90)]  # 10 %
    with pytest.raises(ValueError, match="min_overlap=0.11"):
        prepare(pbmc_log, genes=model, min_overlap=0.11, copy=True)
    with pytest.warns(UserWarning, match=r"Only 10 of the model's 100 genes"):
        prepare(pbmc_log, genes=model, min_overlap=0.1, copy=True)


def test_duplicated_model_genes_warned(pbmc_log):
    model = list(pbmc_log.var_names[:5]) * 2
    with pytest.warns(UserWarning, match=r"`genes` lists 5 duplicated"):
        prepare(pbmc_log, genes=model, min_overlap=0)
    assert pbmc_log.uns["scmulan_prepare"]["n_model_genes"] == 5
