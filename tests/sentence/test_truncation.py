"""Truncation to a maximum length is never silent: inference and the training dataset warn with the counts."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy import sparse

from scmulan.sentence import CellSource, TaskSpec, TrainingSentenceDataset, gene_segments, warn_truncated

FIELDS = ("organ", "region", "coarse_cell_type", "cell_type")


def _n_expressed(source: CellSource, rows: np.ndarray) -> np.ndarray:
    """Expressed model genes of each cell of ``rows`` (an oracle independent of gene_segments)."""
    X, _ = source.read(rows)
    dense = X.toarray()
    return ((dense > 0) & (source.col_token[None, :] >= 0)).sum(1)


def test_warn_truncated_message_and_silence():
    with pytest.warns(UserWarning, match=re.escape("7 of 250 cells express more than 12 model genes")) as record:
        warn_truncated(7, 250, 12)
    assert len(record) == 1
    assert "keep the 12 most highly expressed genes." in str(record[0].message)
    with pytest.warns(UserWarning, match=re.escape("3 of 9 query cells express more than 5 model genes; their")):
        warn_truncated(3, 9, 5, cells="query cells", hint="raise it")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_truncated(0, 250, 12)  # nothing truncated: no warning


def test_inference_warns_with_the_number_of_truncated_cells(toy_cells, toy_vocab, toy_obs_keys):
    """decode_cells sums the truncated cells over its chunks and names them in one warning."""
    import torch

    from scmulan.model._inference import DecodingRecipe, decode_cells
    from scmulan.nn import CSentenceTransformer, TransformerConfig
    from scmulan.sentence import SentenceLayout

    adata = toy_cells(45, 30, seed=4, density=0.5)
    source = CellSource(adata, toy_vocab, obs_keys=toy_obs_keys)
    n_expressed = _n_expressed(source, np.arange(adata.n_obs))
    max_genes = int(np.median(n_expressed))
    n_long = int((n_expressed > max_genes).sum())
    assert 0 < n_long < adata.n_obs
    torch.manual_seed(0)
    net = CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=len(toy_vocab)))
    recipe = DecodingRecipe("annotation", 1)

    def layout(genes: int) -> SentenceLayout:  # the layout whose prompts keep `genes` genes with this context
        n_context = len(source.obs_keys)
        decoding = SentenceLayout(genes + n_context + 4)
        assert decoding.decoding_gene_budget(n_context) == genes
        return decoding

    expected = f"{n_long} of {adata.n_obs} cells express more than {max_genes} model genes"
    with pytest.warns(UserWarning, match=re.escape(expected)) as record:
        out = decode_cells(net, toy_vocab, source, recipe, layout=layout(max_genes), chunk_size=10, progress=False)
    assert sum("model genes" in str(w.message) for w in record) == 1  # one warning for all chunks
    np.testing.assert_array_equal(out.n_genes, np.minimum(n_expressed, max_genes))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a limit no cell reaches: no warning
        decode_cells(net, toy_vocab, source, recipe, layout=layout(int(n_expressed.max())), progress=False)


def _dataset(source, vocab, **kwargs) -> TrainingSentenceDataset:
    task_ids = {t: vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    kwargs = {"batch_size": 4, "chunk_size": 12, "seed": 2, **kwargs}
    return TrainingSentenceDataset(
        [source], TaskSpec(FIELDS), task_ids, end_id=vocab.end_id, pad_id=vocab.pad_id, **kwargs
    )


@pytest.mark.parametrize(("chunk_size", "max_length"), [(12, 18), (7, 20), (50, 15)])
def test_training_dataset_warns_with_the_number_of_truncated_cells(
    toy_cells, toy_vocab, toy_obs_keys, chunk_size, max_length
):
    adata = toy_cells(36, 30, seed=5, density=0.4)
    source = CellSource(adata, toy_vocab, obs_keys=toy_obs_keys)
    ds = _dataset(source, toy_vocab, chunk_size=chunk_size, max_length=max_length)
    max_genes = max_length - len(FIELDS) - 3
    # the epoch's plan may repeat cells to fill its last chunk: count every cell read
    rows = np.concatenate([row for _, row in ds.plan(1)])
    n_long = int((_n_expressed(source, rows) > max_genes).sum())
    assert 0 < n_long < len(rows)
    expected = f"{n_long} of {len(rows)} training cells read in this pass express more than {max_genes} model genes"
    with pytest.warns(UserWarning, match=re.escape(expected)) as record:
        batches = list(ds)
    assert sum("model genes" in str(w.message) for w in record) == 1
    assert max(int(b["lengths"].max()) for b in batches) <= max_length
    # the counter restarts with every pass
    with pytest.warns(UserWarning, match=re.escape(expected)):
        list(ds)
    # stopping early still reports what was read
    with pytest.warns(UserWarning, match="training cells read in this pass express more than"):
        for _ in zip(range(1), ds, strict=False):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(_dataset(source, toy_vocab, chunk_size=chunk_size, max_length=max_length, warn_truncation=False))
        list(_dataset(source, toy_vocab, chunk_size=chunk_size, max_length=100))  # nothing cut: silent


def test_gene_segments_counts_truncated_cells(toy_cells, toy_vocab, toy_obs_keys):
    adata = toy_cells(40, 30, seed=6, density=0.5)
    source = CellSource(adata, toy_vocab, obs_keys=toy_obs_keys)
    n_expressed = _n_expressed(source, np.arange(40))
    for max_genes in (1, 5, int(n_expressed.max()) - 1, int(n_expressed.max())):
        segs = gene_segments(adata.X, source.col_token, max_genes=max_genes)
        assert segs.n_truncated == int((n_expressed > max_genes).sum())


def test_truncation_keeps_the_same_genes_when_the_sort_key_does_not_fit():
    """Token ids too large for the one-key sort take the lexsort path; both keep the top genes, ties by token."""
    rng = np.random.default_rng(3)
    X = sparse.random(60, 40, density=0.5, format="csr", random_state=4, dtype=np.float32)
    X.data = np.round(X.data * 4).astype(np.float32) + 1  # few distinct values: many ties
    small = np.arange(40, dtype=np.int64)[::-1].copy()
    huge = small + 2**40  # 31 bits of value + 41 bits of token > 63
    for order in ("legacy", "ascending"):
        a = gene_segments(X, small, order=order, max_genes=7, rng=rng)
        b = gene_segments(X, huge, order=order, max_genes=7, rng=rng)
        np.testing.assert_array_equal(a.ids + 2**40, b.ids)
        np.testing.assert_array_equal(a.levels, b.levels)
        np.testing.assert_array_equal(a.offsets, b.offsets)
    # the oracle, per cell: highest value first, equal values by ascending token
    for i in range(X.shape[0]):
        row = X[i]
        tok, val = small[row.indices], row.data
        want = sorted(tok[np.lexsort((tok, -val))[:7]].tolist())
        assert sorted(a.ids[a.offsets[i] : a.offsets[i + 1]].tolist()) == want
