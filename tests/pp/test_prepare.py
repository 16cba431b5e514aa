"""`scmulan.pp.prepare`: values (normalisation, layers, copy), the report, and bad input."""

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import scmulan
from scmulan.pp import prepare

FORMATS = {
    "csr": sparse.csr_matrix,
    "csc": sparse.csc_matrix,
    "csr_array": sparse.csr_array,
    "dense": np.asarray,
}


def oracle_log1p(dense: np.ndarray) -> np.ndarray:
    """scanpy's normalize_total(1e4) + log1p on a dense float64 copy."""
    a = ad.AnnData(np.array(dense, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Some cells have zero counts")
        sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return np.asarray(a.X)


def dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def snapshot(adata: ad.AnnData) -> dict:
    return {
        "X": dense(adata.X).copy(),
        "X_id": id(adata.X),
        "layers": sorted(adata.layers),
        "var": adata.var.copy(),
        "uns": sorted(adata.uns),
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    assert id(adata.X) == before["X_id"]
    np.testing.assert_array_equal(dense(adata.X), before["X"])
    assert sorted(adata.layers) == before["layers"]
    pd.testing.assert_frame_equal(adata.var, before["var"])
    assert sorted(adata.uns) == before["uns"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_counts_match_scanpy_oracle(counts_dense, fmt, dtype):
    adata = ad.AnnData(FORMATS[fmt](counts_dense.astype(dtype)))
    prepare(adata)
    expected = oracle_log1p(counts_dense)
    assert adata.X.dtype == np.float32
    if fmt == "dense":
        assert isinstance(adata.X, np.ndarray)
    else:
        assert sparse.issparse(adata.X)
        assert adata.X.format == "csr"
        assert isinstance(adata.X, sparse.sparray) == (fmt == "csr_array")
    np.testing.assert_allclose(dense(adata.X), expected, rtol=1e-5, atol=1e-6)
    assert not dense(adata.X)[1].any()  # the all-zero cell stays zero, no NaN
    report = adata.uns["scmulan_prepare"]
    assert report["data_kind"] == "counts"
    assert report["normalized"]
    assert report["source"] == "X"


def test_counts_kept_in_layer(counts_adata, counts_dense):
    original = counts_adata.X
    prepare(counts_adata)
    assert counts_adata.layers["counts"] is original
    np.testing.assert_array_equal(dense(counts_adata.layers["counts"]), counts_dense)
    assert counts_adata.uns["scmulan_prepare"]["original_layer"] == "counts"
    # X and the kept counts share no arrays
    assert not np.shares_memory(counts_adata.X.data, original.data)
    assert not np.shares_memory(counts_adata.X.indices, original.indices)


def test_existing_counts_layer_not_overwritten(counts_adata):
    marker = sparse.csr_matrix(np.ones(counts_adata.shape, dtype=np.float32))
    counts_adata.layers["counts"] = marker
    prepare(counts_adata)
    assert counts_adata.layers["counts"] is marker
    assert counts_adata.uns["scmulan_prepare"]["original_layer"] == ""


def test_counts_from_layer(counts_adata, counts_dense, pbmc_log):
    counts_adata.layers["raw"] = counts_adata.X
    counts_adata.X = sparse.csr_matrix(np.full(counts_adata.shape, 0.5, dtype=np.float32))
    prepare(counts_adata, layer="raw")
    np.testing.assert_allclose(dense(counts_adata.X), oracle_log1p(counts_dense), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(dense(counts_adata.layers["raw"]), counts_dense)
    assert "counts" not in counts_adata.layers  # counts already live in the layer that was used
    report = counts_adata.uns["scmulan_prepare"]
    assert report["source"] == "layers['raw']"
    assert report["params"]["layer"] == "raw"


def test_log_normalized_left_untouched(pbmc_log):
    x = pbmc_log.X
    before = x.toarray()
    prepare(pbmc_log)
    assert pbmc_log.X is x
    np.testing.assert_array_equal(pbmc_log.X.toarray(), before)
    assert "counts" not in pbmc_log.layers
    report = pbmc_log.uns["scmulan_prepare"]
    assert report["data_kind"] == "log_normalized"
    assert not report["normalized"]


def test_log_normalized_layer_copied_to_x(pbmc_log):
    log = pbmc_log.X
    pbmc_log.layers["log"] = sparse.csc_matrix(log, dtype=np.float64)
    pbmc_log.X = sparse.csr_matrix(pbmc_log.shape, dtype=np.float32)
    prepare(pbmc_log, layer="log")
    assert pbmc_log.X.format == "csr"
    assert pbmc_log.X.dtype == np.float32
    np.testing.assert_array_equal(pbmc_log.X.toarray(), log.toarray())
    assert pbmc_log.layers["log"].format == "csc"  # the layer itself is left alone


def test_tpm_like_warned_and_normalized_like_counts(counts_dense):
    totals = counts_dense.sum(axis=1, keepdims=True)
    cpm = np.divide(counts_dense * 1e6, totals, out=np.zeros_like(counts_dense), where=totals > 0)
    adata = ad.AnnData(sparse.csr_matrix(cpm))
    with pytest.warns(UserWarning, match=r"TPM/CPM.*treating it like counts"):
        prepare(adata)
    # normalising CPM to 1e4 per cell gives what normalising the counts gives
    np.testing.assert_allclose(adata.X.toarray(), oracle_log1p(counts_dense), rtol=1e-5, atol=1e-5)
    assert adata.uns["scmulan_prepare"]["data_kind"] == "unlogged_nonint"
    assert "counts" not in adata.layers  # TPM-like values are not counts: kept under another name
    np.testing.assert_array_equal(adata.layers["unlogged"].toarray(), cpm)
    assert adata.uns["scmulan_prepare"]["original_layer"] == "unlogged"


def test_copy_leaves_input_untouched(counts_adata):
    before = snapshot(counts_adata)
    out = prepare(counts_adata, copy=True)
    assert_unchanged(counts_adata, before)
    assert isinstance(out, ad.AnnData)
    assert out is not counts_adata
    assert "scmulan_gene" in out.var
    assert "scmulan_prepare" in out.uns
    assert prepare(counts_adata) is None


def test_view_is_made_actual_and_parent_untouched(counts_adata, counts_dense):
    view = counts_adata[:10]
    with pytest.warns(ad.ImplicitModificationWarning, match="view"):
        prepare(view)
    assert not view.is_view
    assert type(view.layers["counts"]) is sparse.csr_matrix  # a real matrix, not a view of the parent
    np.testing.assert_array_equal(view.layers["counts"].toarray(), counts_dense[:10])
    np.testing.assert_allclose(view.X.toarray(), oracle_log1p(counts_dense[:10]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(counts_adata.X.toarray(), counts_dense)
    assert "scmulan_gene" not in counts_adata.var


def test_deterministic(counts_adata):
    a = prepare(counts_adata, copy=True)
    b = prepare(counts_adata, copy=True)
    np.testing.assert_array_equal(a.X.data, b.X.data)
    np.testing.assert_array_equal(a.X.indices, b.X.indices)


def test_idempotent(counts_adata):
    prepare(counts_adata)
    x = counts_adata.X
    prepare(counts_adata)
    assert counts_adata.X is x
    assert counts_adata.uns["scmulan_prepare"]["data_kind"] == "log_normalized"


def test_report_is_h5ad_and_json_writable(tmp_path, pbmc_log):
    genes = list(pbmc_log.var_names[:100]) + ["NOT_A_GENE"]
    prepare(pbmc_log, genes=genes, aliases={"ALIAS1": "HES4"})
    report = pbmc_log.uns["scmulan_prepare"]
    json.dumps(report)
    path = tmp_path / "prepared.h5ad"
    pbmc_log.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.uns["scmulan_prepare"]["n_overlap"] == report["n_overlap"] == 100
    assert list(back.uns["scmulan_prepare"]["missing_genes"]) == ["NOT_A_GENE"]  # the model's spelling
    np.testing.assert_array_equal(back.var["scmulan_gene"].notna(), pbmc_log.var["scmulan_gene"].notna())
    assert back.uns["scmulan_prepare"]["params"]["min_overlap"] == 0.05


def test_logging(counts_adata, caplog):
    with caplog.at_level("INFO", logger="scmulan"):
        prepare(counts_adata)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("computing")
    assert "finished" in messages[-1]
    assert "var['scmulan_gene']" in messages[-1]
    assert "layers['counts']" in messages[-1]


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import scmulan, scmulan.pp, sys; print(any(m.split('.')[0] in {'torch', 'lightning', 'scvi'} for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert scmulan.pp.prepare is prepare


# --- bad input: a specific error naming the fix, and nothing modified


def test_scaled_data_rejected(pbmc_scaled):
    before = snapshot(pbmc_scaled)
    with pytest.raises(ValueError, match=r"negative values.*scaled.*adata\.raw\.to_adata\(\).*layer="):
        prepare(pbmc_scaled)
    assert_unchanged(pbmc_scaled, before)


@pytest.mark.parametrize(
    ("bad", "match"), [(np.nan, r"NaN values.*nan_to_num"), (np.inf, r"infinite values"), (-3.0, "scaled")]
)
def test_bad_values_rejected(counts_adata, bad, match):
    x = counts_adata.X.toarray()
    x[7, 2] = bad
    counts_adata.X = sparse.csr_matrix(x)
    before = snapshot(counts_adata)
    with pytest.raises(ValueError, match=match):
        prepare(counts_adata, genes=list(counts_adata.var_names))
    assert_unchanged(counts_adata, before)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty_rejected(shape):
    with pytest.raises(ValueError, match=r"`adata` is empty.*at least one cell and one gene"):
        prepare(ad.AnnData(sparse.csr_matrix(shape, dtype=np.float32)))


def test_all_zero_rejected(counts_adata):
    counts_adata.X = sparse.csr_matrix(counts_adata.shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"all zeros.*layer="):
        prepare(counts_adata)


def test_missing_layer_lists_layers(counts_adata):
    counts_adata.layers["spliced"] = counts_adata.X
    before = snapshot(counts_adata)
    with pytest.raises(ValueError, match=r"`layer='counts'` not found; available layers: \['spliced'\]"):
        prepare(counts_adata, layer="counts")
    assert_unchanged(counts_adata, before)


def test_missing_gene_symbols_lists_columns(counts_adata):
    counts_adata.var["symbol"] = counts_adata.var_names
    with pytest.raises(ValueError, match=r"`gene_symbols='gene_name'` is not a column of `var`.*\['symbol'\]"):
        prepare(counts_adata, gene_symbols="gene_name")


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_min_overlap_out_of_range(counts_adata, value):
    with pytest.raises(ValueError, match="`min_overlap` must be a fraction between 0 and 1"):
        prepare(counts_adata, genes=list(counts_adata.var_names), min_overlap=value)


def test_backed_needs_copy(tmp_path, counts_adata, counts_dense):
    path = tmp_path / "counts.h5ad"
    counts_adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match=r"backed.*copy=True.*to_memory\(\)"):
        prepare(backed)
    out = prepare(backed, copy=True)
    assert not out.isbacked
    np.testing.assert_allclose(out.X.toarray(), oracle_log1p(counts_dense), rtol=1e-5, atol=1e-6)
    backed.file.close()
    on_disk = ad.read_h5ad(path)
    np.testing.assert_array_equal(on_disk.X.toarray(), counts_dense)
    assert "scmulan_prepare" not in on_disk.uns
