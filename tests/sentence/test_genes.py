"""Gene segments: legacy parity with the original scMulan's prompts, and properties against per-cell oracles."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import sparse

from scmulan.sentence import gene_segments, gene_token_ids, normalize_rows, prompts
from scmulan.vocab import Vocabulary

# ---------------------------------------------------------------------------- legacy parity


def _assert_prompts_equal_expected(sentences, expected):
    np.testing.assert_array_equal(sentences.offsets, expected["prompt_offsets"])
    np.testing.assert_array_equal(sentences.ids, expected["prompt_token_ids"])
    np.testing.assert_array_equal(sentences.levels, expected["prompt_levels"])


@pytest.fixture(scope="module")
def expected(legacy_dir):
    with np.load(legacy_dir / "expected.npz", allow_pickle=False) as f:
        return {k: f[k] for k in ("obs_names", "prompt_offsets", "prompt_token_ids", "prompt_levels")}


def test_legacy_prompts_from_prepared_input(legacy_dir, legacy_vocab, expected):
    adata = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")
    np.testing.assert_array_equal(adata.obs_names, expected["obs_names"])
    genes = gene_segments(adata.X, gene_token_ids(adata, legacy_vocab), order="legacy")
    s = prompts(legacy_vocab.task_id("<annotate>"), adata.n_obs, genes=genes)
    assert legacy_vocab.task_id("<annotate>") == legacy_vocab.task_id("<PCT>")
    _assert_prompts_equal_expected(s, expected)
    assert s.groups is None


def test_legacy_prompts_from_raw_counts(legacy_dir, legacy_vocab, expected):
    """765 genes of raw counts, normalised per row (normalize_total 1e4 + log1p over all 765 genes first)."""
    adata = ad.read_h5ad(legacy_dir / "input_counts.h5ad")
    assert adata.n_vars == 765
    col_token = gene_token_ids(adata, legacy_vocab)
    assert (col_token >= 0).sum() == 193  # the overlap stated by the reference README
    genes = gene_segments(normalize_rows(sparse.csr_matrix(adata.X)), col_token, order="legacy")
    _assert_prompts_equal_expected(prompts(legacy_vocab.task_id("<annotate>"), adata.n_obs, genes=genes), expected)


def test_legacy_prompts_with_dense_chunks_and_backed_rows(legacy_dir, legacy_vocab, expected):
    """The same prompts from a dense matrix in two chunks and from a backed file's row slices."""
    adata = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")
    col_token = gene_token_ids(adata, legacy_vocab)
    backed = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad", backed="r")
    try:
        parts = []
        for lo, hi in [(0, 17), (17, 48)]:
            dense = gene_segments(adata.X[lo:hi].toarray(), col_token, order="legacy")
            from_backed = gene_segments(backed.X[lo:hi], col_token, order="legacy")
            np.testing.assert_array_equal(dense.ids, from_backed.ids)
            np.testing.assert_array_equal(dense.levels, from_backed.levels)
            parts.append(prompts(legacy_vocab.task_id("<annotate>"), hi - lo, genes=dense))
    finally:
        backed.file.close()
    lengths = np.concatenate([p.lengths for p in parts])
    np.testing.assert_array_equal(np.diff(expected["prompt_offsets"]), lengths)
    np.testing.assert_array_equal(np.concatenate([p.ids for p in parts]), expected["prompt_token_ids"])
    np.testing.assert_array_equal(np.concatenate([p.levels for p in parts]), expected["prompt_levels"])


@pytest.fixture(scope="module")
def edge_cases(legacy_dir):
    return json.loads((legacy_dir / "edge_cases.json").read_text())["cases"]


def _edge_matrix(cases, vocab: Vocabulary) -> tuple[sparse.csr_matrix, np.ndarray]:
    """One float32 row per case over the 2000 legacy genes (gene_set order), as the original driver built it."""
    genes = vocab.genes
    col = {g: j for j, g in enumerate(genes)}
    X = np.zeros((len(cases), len(genes)), dtype=np.float32)
    for i, case in enumerate(cases):
        for g, v in case["input_values"].items():
            X[i, col[g]] = np.float32(v)
    var = pd.DataFrame(index=genes)
    return sparse.csr_matrix(X), gene_token_ids(ad.AnnData(sparse.csr_matrix(X), var=var), vocab)


def test_legacy_edge_cases(edge_cases, legacy_vocab):
    names = {c["name"] for c in edge_cases}
    assert {"one_expressed_gene", "ties", "exact_bin_edges_max2", "no_expressed_gene"} <= names
    X, col_token = _edge_matrix(edge_cases, legacy_vocab)
    task = legacy_vocab.task_id("<annotate>")
    genes = gene_segments(X, col_token, order="legacy")
    together = prompts(task, len(edge_cases), genes=genes)
    for i, case in enumerate(edge_cases):
        # Each case alone, and as one row among the others: cells never influence each other.
        alone = gene_segments(X[i], col_token, order="legacy")
        ids, levels = together.cell(i)
        if "error" in case:  # the original crashed; here: an empty gene segment and a bare task prompt
            assert alone.lengths.tolist() == [0]
            assert ids.tolist() == [task]
            assert levels.tolist() == [0]
            continue
        gene_ids = [legacy_vocab.token_id("gene", g) for g in case["expressed_genes_in_prompt_order"]]
        assert alone.ids.tolist() == gene_ids
        assert alone.levels.tolist() == case["levels"]
        assert ids.tolist() == case["prompt_token_ids"]
        assert levels.tolist() == case["prompt_levels"]


# ---------------------------------------------------------------------------- properties


@st.composite
def sparse_chunks(draw):
    """A random CSR chunk (stored zeros and negatives, rows with unsorted columns) and a column->token map."""
    n = draw(st.integers(0, 7))
    m = draw(st.integers(1, 12))
    value = st.one_of(
        st.just(0.0),
        st.sampled_from([0.5, 1.0, 2.0, -1.0, 1e-7]),
        st.floats(-5, 20, width=32, allow_subnormal=False),
    )
    dense = draw(arrays(np.float32, (n, m), elements=value))
    stored = draw(arrays(bool, (n, m))) | (dense != 0)  # some zeros are stored explicitly
    indices, data, indptr = [], [], [0]
    rnd = draw(st.randoms())
    for i in range(n):
        cols = list(np.flatnonzero(stored[i]))
        rnd.shuffle(cols)  # CSR rows need not have sorted indices
        indices += cols
        data += [dense[i, j] for j in cols]
        indptr.append(len(indices))
    X = sparse.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32), np.asarray(indptr)), shape=(n, m)
    )
    tokens = draw(st.lists(st.integers(0, 60), min_size=m, max_size=m, unique=True))
    non_model = draw(arrays(bool, m))
    col_token = np.where(non_model, -1, np.asarray(tokens, dtype=np.int64))
    return X, dense, col_token


def cell_oracle(row: np.ndarray, col_token: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expressed model genes of one dense row: token ids, values and levels (``np.digitize``), by token id."""
    keep = (row > 0) & (col_token >= 0)
    tok, val = col_token[keep], row[keep]
    order = np.argsort(tok)
    tok, val = tok[order], val[order]
    if len(val) == 0:
        return tok, val, np.zeros(0, dtype=np.int64)
    return tok, val, np.digitize(val, np.linspace(0, val.max(), 11), right=True)


@settings(max_examples=200, deadline=None)
@given(sparse_chunks())
def test_gene_segments_match_per_cell_oracle(chunk):
    X, dense, col_token = chunk
    segs = gene_segments(X, col_token, order="legacy")
    assert segs.offsets.shape == (X.shape[0] + 1,)
    assert segs.ids.dtype == np.int64
    assert segs.levels.dtype == np.int64
    assert segs.n_truncated == 0
    for i in range(X.shape[0]):
        sl = slice(segs.offsets[i], segs.offsets[i + 1])
        ids, levels = segs.ids[sl], segs.levels[sl]
        tok, val, lvl = cell_oracle(dense[i], col_token)
        # legacy order: descending token id, i.e. the oracle reversed
        np.testing.assert_array_equal(ids, tok[::-1])
        np.testing.assert_array_equal(levels, lvl[::-1])
        assert len(np.unique(ids)) == len(ids)
        if len(ids):
            assert levels.min() >= 1
            assert levels.max() == 10  # the cell's max
            assert levels[ids == tok[np.argmax(val)]] == 10
        # zeros, negatives and non-model columns never enter
        assert (ids >= 0).all()
        assert not np.isin(ids, col_token[(dense[i] <= 0) & (col_token >= 0)]).any()
    # dense input gives the same segments
    from_dense = gene_segments(dense, col_token, order="legacy")
    np.testing.assert_array_equal(from_dense.ids, segs.ids)
    np.testing.assert_array_equal(from_dense.levels, segs.levels)
    np.testing.assert_array_equal(from_dense.offsets, segs.offsets)


@settings(max_examples=150, deadline=None)
@given(sparse_chunks(), st.integers(0, 2**32 - 1))
def test_orders_are_permutations_of_legacy(chunk, seed):
    X, _, col_token = chunk
    legacy = gene_segments(X, col_token, order="legacy")
    ascending = gene_segments(X, col_token, order="ascending")
    shuffled = gene_segments(X, col_token, order="shuffle", rng=np.random.default_rng(seed))
    for other in (ascending, shuffled):
        np.testing.assert_array_equal(other.offsets, legacy.offsets)
    for i in range(X.shape[0]):
        sl = slice(legacy.offsets[i], legacy.offsets[i + 1])
        assert np.all(np.diff(legacy.ids[sl]) < 0)
        assert np.all(np.diff(ascending.ids[sl]) > 0)
        np.testing.assert_array_equal(ascending.ids[sl], legacy.ids[sl][::-1])
        np.testing.assert_array_equal(ascending.levels[sl], legacy.levels[sl][::-1])
        # shuffle: the same (id, level) pairs in some order
        pairs = sorted(zip(shuffled.ids[sl].tolist(), shuffled.levels[sl].tolist(), strict=True))
        assert pairs == sorted(zip(legacy.ids[sl].tolist(), legacy.levels[sl].tolist(), strict=True))


def test_shuffle_actually_shuffles_and_is_seeded():
    rng = np.random.default_rng(0)
    X = sparse.random(20, 50, density=0.8, random_state=1, format="csr", dtype=np.float32)
    col_token = np.arange(50, dtype=np.int64)
    a = gene_segments(X, col_token, order="shuffle", rng=np.random.default_rng(7))
    b = gene_segments(X, col_token, order="shuffle", rng=np.random.default_rng(7))
    c = gene_segments(X, col_token, order="shuffle", rng=rng)
    legacy = gene_segments(X, col_token, order="legacy")
    np.testing.assert_array_equal(a.ids, b.ids)
    assert not np.array_equal(a.ids, c.ids)
    assert not np.array_equal(a.ids, legacy.ids)
    with pytest.raises(ValueError, match="rng"):
        gene_segments(X, col_token, order="shuffle")
    with pytest.raises(ValueError, match="order"):
        gene_segments(X, col_token, order="random")


@settings(max_examples=200, deadline=None)
@given(sparse_chunks(), st.integers(1, 6), st.sampled_from(["legacy", "ascending", "shuffle"]))
def test_max_genes_keeps_the_highest_values(chunk, max_genes, order):
    X, dense, col_token = chunk
    full = gene_segments(X, col_token, order="legacy")
    cut = gene_segments(X, col_token, order=order, max_genes=max_genes, rng=np.random.default_rng(0))
    assert cut.n_truncated == int((full.lengths > max_genes).sum())
    np.testing.assert_array_equal(cut.lengths, np.minimum(full.lengths, max_genes))
    for i in range(X.shape[0]):
        tok, val, lvl = cell_oracle(dense[i], col_token)
        # oracle: highest values first, ties by gene order (ascending token id)
        keep = np.lexsort((tok, -val))[:max_genes]
        sl = slice(cut.offsets[i], cut.offsets[i + 1])
        got = dict(zip(cut.ids[sl].tolist(), cut.levels[sl].tolist(), strict=True))
        assert got == dict(zip(tok[keep].tolist(), lvl[keep].tolist(), strict=True))  # levels of the whole cell
        if order == "legacy":
            assert np.all(np.diff(cut.ids[sl]) < 0)


def test_subset_and_lengths():
    X = sparse.random(6, 10, density=0.5, random_state=0, format="csr", dtype=np.float32)
    segs = gene_segments(X, np.arange(10, dtype=np.int64))
    rows = np.array([4, 0, 4])
    sub = segs.subset(rows)
    np.testing.assert_array_equal(sub.lengths, segs.lengths[rows])
    for k, r in enumerate(rows):
        np.testing.assert_array_equal(
            sub.ids[sub.offsets[k] : sub.offsets[k + 1]], segs.ids[segs.offsets[r] : segs.offsets[r + 1]]
        )


# ---------------------------------------------------------------------------- gene_token_ids


def test_gene_token_ids_sources_and_errors(toy_vocab):
    var_names = ["G003", "nope", "G000", "G029"]
    adata = ad.AnnData(np.zeros((2, 4), dtype=np.float32), var=pd.DataFrame(index=var_names))
    expected = [
        toy_vocab.token_id("gene", "G003"),
        -1,
        toy_vocab.token_id("gene", "G000"),
        toy_vocab.token_id("gene", "G029"),
    ]
    assert gene_token_ids(adata, toy_vocab).tolist() == expected

    adata.var["symbol"] = ["G001", "G002", np.nan, "x"]
    sym = gene_token_ids(adata, toy_vocab, gene_symbols="symbol").tolist()
    assert sym == [toy_vocab.token_id("gene", "G001"), toy_vocab.token_id("gene", "G002"), -1, -1]
    with pytest.raises(ValueError, match="not a column"):
        gene_token_ids(adata, toy_vocab, gene_symbols="missing")
    # scmulan.pp.prepare's column wins over var_names and gene_symbols
    adata.var["scmulan_gene"] = ["G010", "", "G011", "G012"]
    assert gene_token_ids(adata, toy_vocab, gene_symbols="symbol").tolist() == [
        toy_vocab.token_id("gene", g) if g else -1 for g in ["G010", "", "G011", "G012"]
    ]
    adata.var["scmulan_gene"] = ["G010", "G010", "G011", "G012"]
    with pytest.raises(ValueError, match="once"):
        gene_token_ids(adata, toy_vocab)
