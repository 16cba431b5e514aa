"""Streaming training batches: sources (in memory, backed, path, shards), sharding over ranks and workers, resume."""

from __future__ import annotations

import warnings
from collections import Counter

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from torch.utils.data import DataLoader

from scmulan.sentence import CellSource, TaskSpec, TrainingSentenceDataset

FIELDS = ("organ", "region", "coarse_cell_type", "cell_type")


def make_dataset(sources, vocab, **kwargs) -> TrainingSentenceDataset:
    spec = kwargs.pop("spec", None) or TaskSpec(FIELDS)
    task_ids = {t: vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    kwargs = {"batch_size": 4, "chunk_size": 12, **kwargs}
    return TrainingSentenceDataset(sources, spec, task_ids, end_id=vocab.end_id, pad_id=vocab.pad_id, **kwargs)


def batch_key(batch: dict[str, torch.Tensor]) -> tuple:
    """A hashable, exact fingerprint of a batch."""
    return tuple((k, tuple(v.shape), v.numpy().tobytes()) for k, v in sorted(batch.items()))


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def cells_of(batch: dict[str, torch.Tensor], vocab, n_cells: int) -> list[int]:
    """The cell of every row, from its barcode gene (each toy cell expresses its own ``BC####`` gene)."""
    first = vocab.token_id("gene", "BC0000")
    ids = batch["ids"].numpy()
    out = []
    for row, mask in zip(ids, batch["attention_mask"].numpy(), strict=True):
        bc = row[mask][(row[mask] >= first) & (row[mask] < first + n_cells)]
        assert len(bc) == 1
        out.append(int(bc[0] - first))
    return out


@pytest.fixture
def barcoded(toy_cells, toy_vocab_factory, toy_obs_keys):
    """36 barcoded toy cells, their vocabulary and an in-memory source."""
    adata = toy_cells(36, 20, seed=3, barcodes=True, extra_genes=2)
    vocab = toy_vocab_factory(20, 36)
    return adata, vocab, CellSource(adata, vocab, obs_keys=toy_obs_keys)


# ---------------------------------------------------------------------------- sources


def test_backed_and_path_sources_give_the_same_batches(barcoded, toy_obs_keys, tmp_path):
    adata, vocab, memory = barcoded
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        for block_size in (1, 5):
            reference = list(make_dataset([memory], vocab, seed=5, block_size=block_size))
            assert len(reference) > 0
            for data in (backed, path, str(path)):
                source = CellSource(data, vocab, obs_keys=toy_obs_keys)
                got = list(make_dataset([source], vocab, seed=5, block_size=block_size))
                assert_batches_equal(got, reference)
    finally:
        backed.file.close()
    # a path source reopens the file in each DataLoader worker
    ds = make_dataset([CellSource(path, vocab, obs_keys=toy_obs_keys)], vocab, seed=5, chunk_size=6)
    expected = Counter(map(batch_key, make_dataset([memory], vocab, seed=5, chunk_size=6)))
    assert Counter(map(batch_key, DataLoader(ds, batch_size=None, num_workers=2))) == expected


def test_backed_anndata_in_spawned_workers(barcoded, toy_obs_keys, tmp_path):
    """A ``backed="r"`` AnnData reaches spawn/forkserver workers (h5py handles cannot be pickled: the file reopens)."""
    adata, vocab, memory = barcoded
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    # a label column that exists only in memory: the workers must use it, not the file's obs
    backed.obs["tissue"] = backed.obs["organ"]
    keys = {**toy_obs_keys, "organ": "tissue"}
    try:
        source = CellSource(backed, vocab, obs_keys=keys)
        ds = make_dataset([source], vocab, seed=5, chunk_size=6)
        expected = Counter(map(batch_key, make_dataset([memory], vocab, seed=5, chunk_size=6)))
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
        got = Counter(map(batch_key, loader))
        assert sum(got.values()) == len(ds) > 0
        assert got == expected
        assert backed.isbacked  # the parent's handle is untouched
        assert backed.file.is_open
    finally:
        backed.file.close()


def test_pickled_backed_source_reads_the_same_rows(barcoded, toy_obs_keys, tmp_path):
    """Views (rows and columns) and in-memory layers of a backed AnnData survive the trip to a worker."""
    import pickle

    adata, vocab, _ = barcoded
    adata = adata.copy()
    adata.layers["lognorm"] = adata.X.copy()
    adata.X = adata.X * 0  # X is not what the source reads
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    backed.layers["doubled"] = backed.layers["lognorm"] * 2  # in memory only, not in the file
    rows = np.array([3, 0, 7, 7, 12])
    try:
        cases = [
            (backed, "lognorm", adata.layers["lognorm"]),
            (backed, "doubled", adata.layers["lognorm"] * 2),
            (backed[5:30:2, ::-1], "lognorm", adata.layers["lognorm"][5:30:2, ::-1]),
        ]
        for data, layer, want in cases:
            source = CellSource(data, vocab, obs_keys=toy_obs_keys, layer=layer)
            for copy in (
                pickle.loads(pickle.dumps(source)),
                pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(source)))),
            ):
                X, meta = copy.read(rows)
                np.testing.assert_array_equal(X.toarray(), want[rows].toarray())
                np.testing.assert_array_equal(meta, source.metadata[rows])
                np.testing.assert_array_equal(copy.col_token, source.col_token)
                assert copy._adata is not None  # reopened from the file
                assert copy._adata.isbacked
    finally:
        backed.file.close()


def _gene_blind(batch: dict, vocab) -> tuple[np.ndarray, list]:
    """Ids with gene tokens blanked, and the sorted (gene id, level) pairs of every row."""
    ids, levels = batch["ids"].numpy(), batch["levels"].numpy()
    is_gene = np.isin(ids, vocab.gene_ids) & batch["attention_mask"].numpy()
    blanked = np.where(is_gene, -7, ids)
    pairs = [
        sorted(zip(ids[r][is_gene[r]].tolist(), levels[r][is_gene[r]].tolist(), strict=True)) for r in range(len(ids))
    ]
    return blanked, pairs


def test_shards_with_different_genes_match_one_concatenated_anndata(toy_cells, toy_vocab_factory, toy_obs_keys):
    """Shards with their own gene orders, extra non-model genes and missing genes read like ``ad.concat`` of them."""
    full = toy_cells(30, 20, seed=7, barcodes=True)
    vocab = toy_vocab_factory(20, 30)
    rng = np.random.default_rng(0)
    shards = []
    for lo, hi in [(0, 11), (11, 12), (12, 30)]:
        shard = full[lo:hi].copy()
        keep = np.flatnonzero((shard.X.getnnz(axis=0) > 0) | (rng.random(shard.n_vars) < 0.5))  # drop some zero genes
        shard = shard[:, rng.permutation(keep)].copy()
        shards.append(shard)
    extra = toy_cells(19, 3, seed=8, extra_genes=4, barcodes=False)[:, -4:]  # 4 non-model genes X000..X003
    shards[2] = ad.concat([shards[2], ad.AnnData(extra.X[:18], obs=shards[2].obs, var=extra.var)], axis=1, merge="same")
    assert len({s.n_vars for s in shards}) > 1
    assert len({tuple(s.var_names[:5]) for s in shards}) == 3
    concatenated = ad.concat(shards, join="outer")
    concatenated.X = concatenated.X.tocsr().astype(np.float32)
    assert concatenated.n_obs == full.n_obs

    kwargs = {"seed": 11, "batch_size": 3, "chunk_size": 8}
    one = list(make_dataset([CellSource(concatenated, vocab, obs_keys=toy_obs_keys)], vocab, **kwargs))
    many = list(make_dataset([CellSource(s, vocab, obs_keys=toy_obs_keys) for s in shards], vocab, **kwargs))
    assert len(one) == len(many) > 0
    for a, b in zip(one, many, strict=True):
        for k in ("attention_mask", "lengths", "groups", "task"):
            assert torch.equal(a[k], b[k]), k
        blank_a, pairs_a = _gene_blind(a, vocab)
        blank_b, pairs_b = _gene_blind(b, vocab)
        np.testing.assert_array_equal(blank_a, blank_b)  # metadata, task tokens, <E> and padding at the same places
        assert pairs_a == pairs_b  # the same genes with the same levels (gene order inside a segment is shuffled)


def test_source_reads_rows_in_the_requested_order(barcoded, toy_obs_keys):
    adata, vocab, source = barcoded
    rows = np.array([5, 2, 30, 2, 6])
    X, meta = source.read(rows)
    np.testing.assert_array_equal(X.toarray(), adata.X[rows].toarray())
    np.testing.assert_array_equal(meta, source.metadata[rows])
    assert X.dtype == np.float32
    chunks = list(source.iter_chunks(10))
    np.testing.assert_array_equal(np.concatenate([r for r, _, _ in chunks]), np.arange(adata.n_obs))
    # metadata ids: the vocabulary's token of each known value, -1 where obs is NaN
    for j, field in enumerate(FIELDS):
        col = adata.obs[toy_obs_keys[field]]
        want = [vocab.token_id(field, str(v)) if isinstance(v, str) else -1 for v in col.astype(object)]
        assert source.metadata[:, j].tolist() == want


def test_source_normalize_and_errors(toy_cells, toy_vocab, toy_obs_keys):
    counts = toy_cells(10, 30, seed=1)
    counts.X.data = np.round(np.expm1(counts.X.data))  # back to counts
    raw = CellSource(counts, toy_vocab, obs_keys=toy_obs_keys, normalize=True)
    X, _ = raw.read(np.arange(10))
    dense = counts.X.toarray()
    totals = dense.sum(1, keepdims=True)
    np.testing.assert_allclose(X.toarray(), np.log1p(dense / np.where(totals > 0, totals, 1) * 1e4), rtol=1e-5)

    with pytest.raises(ValueError, match="no cells"):
        CellSource(counts[:0].copy(), toy_vocab, obs_keys=toy_obs_keys)
    with pytest.raises(ValueError, match="missing"):
        CellSource(counts, toy_vocab, obs_keys={"organ": "tissue"}).read(np.arange(2))
    nothing = counts.copy()
    nothing.var_names = [f"other{i}" for i in range(nothing.n_vars)]
    with pytest.raises(ValueError, match="no gene"):
        CellSource(nothing, toy_vocab).read(np.arange(2))
    odd = counts.copy()
    odd.obs["organ"] = odd.obs["organ"].cat.add_categories(["Moon"])
    odd.obs.loc[odd.obs_names[0], "organ"] = "Moon"
    with pytest.warns(UserWarning, match="Moon"):
        meta = CellSource(odd, toy_vocab, obs_keys=toy_obs_keys).metadata
    assert meta[0, 0] == -1


def test_raw_count_shards_normalise_exactly_like_prepare():
    """One normalisation kernel: chunks of raw counts read with ``normalize=True`` equal ``pp.prepare`` bit for bit."""
    import scmulan
    from scmulan.sentence import gene_segments, gene_token_ids, normalize_rows
    from scmulan.vocab import Vocabulary

    counts = scmulan.datasets.synthetic_atlas(600, 400, seed=2)
    prepared = scmulan.pp.prepare(counts, copy=True)
    vocab = Vocabulary.build(list(counts.var_names), {})
    source = CellSource(counts, vocab, normalize=True)
    rows = np.random.default_rng(0).permutation(counts.n_obs)[:450]
    for chunk in np.array_split(rows, 4):
        X, _ = source.read(chunk)
        want = prepared.X[chunk]
        np.testing.assert_array_equal(X.indptr, want.indptr)
        np.testing.assert_array_equal(X.indices, want.indices)
        np.testing.assert_array_equal(X.data, want.data)  # exact, not allclose: a level edge cannot flip
        col_token = gene_token_ids(counts, vocab)
        a, b = gene_segments(X, col_token), gene_segments(want, col_token)
        np.testing.assert_array_equal(a.levels, b.levels)
    # dense, CSC and CSR chunks give the same values
    chunk = counts.X[:50]
    for form in (chunk.toarray(), sparse.csc_matrix(chunk), sparse.csr_array(chunk)):
        np.testing.assert_array_equal(normalize_rows(form).toarray(), prepared.X[:50].toarray())


# ---------------------------------------------------------------------------- the epoch plan


@pytest.mark.parametrize(
    ("n_obs", "batch_size", "chunk_size", "world_size"),
    [(36, 4, 12, 1), (36, 5, 7, 1), (13, 4, 100, 1), (36, 4, 12, 2), (13, 3, 5, 3), (5, 2, 4, 4)],
)
def test_len_matches_and_ranks_cover_every_cell(
    toy_cells, toy_vocab_factory, toy_obs_keys, n_obs, batch_size, chunk_size, world_size
):
    adata = toy_cells(n_obs, 10, seed=n_obs, barcodes=True)
    vocab = toy_vocab_factory(10, n_obs)
    source = CellSource(adata, vocab, obs_keys=toy_obs_keys)
    seen, counts = set(), []
    for rank in range(world_size):
        ds = make_dataset(
            [source], vocab, batch_size=batch_size, chunk_size=chunk_size, rank=rank, world_size=world_size
        )
        batches = list(ds)
        assert len(ds) == len(batches)
        counts.append(len(batches))
        for b in batches:
            assert 1 <= len(b["ids"]) <= batch_size
            seen.update(cells_of(b, vocab, n_obs))
    assert len(set(counts)) == 1  # every rank yields the same number of batches (DDP needs it)
    assert seen == set(range(n_obs))


def test_epochs_are_deterministic_and_reshuffle(barcoded):
    _, vocab, source = barcoded
    ds = make_dataset([source], vocab, seed=1)
    first = list(ds)
    assert_batches_equal(list(ds), first)  # the same epoch again: the same batches
    ds.epoch = 1
    second = list(ds)
    assert len(second) == len(first)
    assert [batch_key(b) for b in second] != [batch_key(b) for b in first]
    order = [c for b in first for c in cells_of(b, vocab, 36)]
    assert sorted(order) == list(range(36))
    assert order != [c for b in second for c in cells_of(b, vocab, 36)]
    other_seed = list(make_dataset([source], vocab, seed=2))
    assert [batch_key(b) for b in other_seed] != [batch_key(b) for b in first]


def test_no_shuffle_keeps_cell_order_in_chunks(barcoded):
    _, vocab, source = barcoded
    batches = list(make_dataset([source], vocab, shuffle=False, chunk_size=12))
    chunks = [sorted(c for b in batches[i : i + 3] for c in cells_of(b, vocab, 36)) for i in range(0, len(batches), 3)]
    assert chunks == [list(range(0, 12)), list(range(12, 24)), list(range(24, 36))]


def test_indices_restrict_the_cells(barcoded):
    _, vocab, source = barcoded
    split = np.array([0, 3, 4, 10, 20, 35])
    ds = make_dataset([source], vocab, indices=[split])
    assert ds.n_cells == len(split)
    seen = {c for b in ds for c in cells_of(b, vocab, 36)}
    assert seen == set(split.tolist())


@pytest.mark.parametrize("world", [(0, 1), (1, 2)])
def test_start_batch_resumes_exactly(barcoded, world):
    _, vocab, source = barcoded
    rank, world_size = world
    full = list(make_dataset([source], vocab, seed=4, rank=rank, world_size=world_size))
    for k in range(len(full) + 2):
        ds = make_dataset([source], vocab, seed=4, rank=rank, world_size=world_size)
        ds.start_batch = k
        assert_batches_equal(list(ds), full[k:])


def _loader_batches(ds, num_workers: int) -> list[dict]:
    return list(DataLoader(ds, batch_size=None, num_workers=num_workers))


def test_dataloader_workers_give_the_same_batches(barcoded):
    _, vocab, source = barcoded
    ds = make_dataset([source], vocab, seed=9, chunk_size=6)
    plain = _loader_batches(ds, 0)
    workers = _loader_batches(ds, 2)
    assert len(workers) == len(plain) == len(ds)
    assert Counter(map(batch_key, workers)) == Counter(map(batch_key, plain))


def test_dataloader_workers_resume(barcoded):
    """Resuming at batch k with workers yields the batches k: of the same run, even when workers' shares differ."""
    _, vocab, source = barcoded
    # 36 cells in chunks of 12: 3 chunks of 3 batches, so worker 0 holds 6 batches and worker 1 holds 3.
    ds = make_dataset([source], vocab, seed=9, chunk_size=12, batch_size=4)
    full = _loader_batches(ds, 2)
    assert len(full) == 9
    for k in (1, 4, 7, 8):
        ds.start_batch = k
        resumed = _loader_batches(ds, 2)
        assert Counter(map(batch_key, resumed)) == Counter(map(batch_key, full[k:])), k


# ---------------------------------------------------------------------------- errors


def test_no_cells_is_an_error(barcoded, toy_obs_keys):
    adata, vocab, source = barcoded
    with pytest.raises(ValueError, match="no cells"):
        CellSource(adata[:0].copy(), vocab, obs_keys=toy_obs_keys)
    with pytest.raises(ValueError, match="no cells"):
        make_dataset([source], vocab, indices=[np.zeros(0, dtype=np.int64)])


def test_no_usable_labels_is_an_error(barcoded):
    adata, vocab, _ = barcoded
    unlabelled = CellSource(adata, vocab)  # no obs keys: no metadata at all
    ds = make_dataset([unlabelled], vocab, spec=TaskSpec((), weights=(0.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="labels"):
        list(ds)
    # generation needs no labels
    assert len(list(make_dataset([unlabelled], vocab, spec=TaskSpec((), weights=(1.0, 1.0, 1.0))))) == len(ds)


def _round_robin(counts: list[int]) -> list[tuple[int, int]]:
    """(worker, j) in the order a DataLoader yields them: one batch per worker in turn, skipping finished ones."""
    out, j = [], 0
    while any(c > j for c in counts):
        out += [(w, j) for w, c in enumerate(counts) if c > j]
        j += 1
    return out


@pytest.mark.parametrize("counts", [[6, 3], [3, 3], [4, 0], [0, 4], [9, 6, 3], [2, 5, 5, 1], [7]])
def test_resume_skip_matches_dataloader_interleaving(counts):
    from scmulan.sentence._dataset import _batches_before

    order = _round_robin(counts)
    for start in range(len(order) + 2):
        for w in range(len(counts)):
            assert _batches_before(counts, w, start) == sum(1 for v, _ in order[:start] if v == w)


def test_pickled_dataset_carries_the_process_group_rank(barcoded, monkeypatch):
    """Workers started with spawn unpickle the dataset without a process group: the rank must travel with it."""
    import pickle

    _, vocab, source = barcoded
    ds = make_dataset([source], vocab)
    assert pickle.loads(pickle.dumps(ds))._world() == (0, 1)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    blob = pickle.dumps(ds)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    assert pickle.loads(blob)._world() == (1, 2)
    assert ds._world() == (0, 1)  # the original still follows the live process group


def test_max_length_truncates_to_the_most_expressed_genes(barcoded):
    _, vocab, source = barcoded
    with pytest.warns(UserWarning, match="training cells read in this pass express more than 3 model genes"):
        batches = list(make_dataset([source], vocab, max_length=10))
    for b in batches:
        assert int(b["lengths"].max()) <= 10
        cells_of(b, vocab, 36)  # the barcode, each cell's highest value, always survives
    assert max(int(b["lengths"].max()) for b in list(make_dataset([source], vocab))) > 10


def _labelled_only(adata, rows: np.ndarray):
    """A copy in which only ``rows`` have the two cell-type labels (annotation needs both)."""
    adata = adata.copy()
    for key, value in (("coarse_cell_type", "T cell"), ("cell_type", "CD4 T")):
        col = adata.obs[key].astype(object)
        col[:] = np.nan
        col.iloc[rows] = value
        adata.obs[key] = pd.Categorical(col)
    return adata


@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (0, 2), (1, 2)])
def test_a_chunk_without_qualifying_cells_borrows_the_next_one(barcoded, toy_obs_keys, rank, world_size):
    """Annotation-only training where whole chunks lack labels: no crash mid-epoch, the same batch count per rank."""
    adata, vocab, _ = barcoded
    labelled = np.arange(24, 36)  # chunks of 12 unshuffled cells: only the last one has labels
    source = CellSource(_labelled_only(adata, labelled), vocab, obs_keys=toy_obs_keys)
    spec = TaskSpec(FIELDS, weights=(0.0, 1.0, 0.0))
    kwargs = {"spec": spec, "shuffle": False, "chunk_size": 6, "rank": rank, "world_size": world_size}
    ds = make_dataset([source], vocab, **kwargs)
    with pytest.warns(UserWarning, match=r"No cell of training chunk \d+ \(epoch 0\) qualifies") as record:
        batches = list(ds)
    borrowed = [w for w in record if "qualifies" in str(w.message)]
    assert len(batches) == len(ds)  # every rank still yields its full share
    my_chunks = range(rank, len(ds.plan(world_size)), world_size)
    assert len(borrowed) == sum(c < 4 for c in my_chunks)  # chunks 0-3 hold cells 0-23
    assert "repeat the cells of chunk 4" in str(borrowed[0].message)
    seen = {c for b in batches for c in cells_of(b, vocab, 36)}
    assert seen <= set(labelled.tolist())
    assert all(bool((b["task"] == 1).all()) for b in batches)
    # shuffled chunks: the same guarantees
    shuffled = make_dataset([source], vocab, **{**kwargs, "shuffle": True, "chunk_size": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(shuffled)
    assert len(batches) == len(shuffled)
    assert {c for b in batches for c in cells_of(b, vocab, 36)} <= set(labelled.tolist())


def test_no_qualifying_cell_anywhere_is_an_error(barcoded, toy_obs_keys):
    adata, vocab, _ = barcoded
    source = CellSource(_labelled_only(adata, np.array([], dtype=np.int64)), vocab, obs_keys=toy_obs_keys)
    ds = make_dataset([source], vocab, spec=TaskSpec(FIELDS, weights=(0.0, 1.0, 0.0)))
    with pytest.raises(ValueError, match="No training cell qualifies for any requested task"):
        list(ds)
