"""TileDB-SOMA experiments as a corpus: the same cells and sentences as the .h5ad path, sharding, resume, errors."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import scmulan
from scmulan.sentence import CellSource, SomaSource, TaskSpec, TrainingSentenceDataset, as_sources
from scmulan.vocab import Vocabulary

soma = pytest.importorskip("tiledbsoma")
import tiledbsoma.io  # noqa: E402

ATLAS_FIELDS = ("organ", "coarse_cell_type", "cell_type", "sex", "disease")
ATLAS_KEYS = {f: f for f in ATLAS_FIELDS}


def make_dataset(sources, vocab, **kwargs) -> TrainingSentenceDataset:
    spec = kwargs.pop("spec", None) or TaskSpec(("organ", "region", "coarse_cell_type", "cell_type"))
    task_ids = {t: vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    kwargs = {"batch_size": 4, "chunk_size": 12, **kwargs}
    return TrainingSentenceDataset(sources, spec, task_ids, end_id=vocab.end_id, pad_id=vocab.pad_id, **kwargs)


def batch_key(batch: dict[str, torch.Tensor]) -> tuple:
    return tuple((k, tuple(v.shape), v.numpy().tobytes()) for k, v in sorted(batch.items()))


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert [batch_key(x) for x in a] == [batch_key(y) for y in b]


def cells_of(batch: dict[str, torch.Tensor], vocab) -> list[int]:
    """The cell of every row, from its barcode gene (toy cell ``i`` expresses its own ``BC{i:04d}``)."""
    first = vocab.token_id("gene", "BC0000")
    ids = np.where(batch["attention_mask"].numpy(), batch["ids"].numpy(), -1)
    rows, cols = np.nonzero((ids >= first) & (ids < first + 36))
    assert np.array_equal(rows, np.arange(len(ids)))  # one barcode per sentence
    return list(ids[rows, cols] - first)


def write_soma(adata, uri) -> str:
    """``adata`` as a SOMA experiment with one measurement ``RNA`` (its ``X`` becomes the layer ``data``)."""
    tiledbsoma.io.from_anndata(str(uri), adata, measurement_name="RNA")
    return str(uri)


@pytest.fixture(scope="module")
def atlas_stores(tmp_path_factory):
    """A synthetic atlas of raw counts, written as an .h5ad file and as a SOMA experiment, and its vocabulary."""
    atlas = scmulan.datasets.synthetic_atlas(n_cells=240, n_genes=160, seed=1)
    del atlas.uns["synthetic_atlas"]
    root = tmp_path_factory.mktemp("stores")
    h5ad = root / "atlas.h5ad"
    atlas.write_h5ad(h5ad)
    vocab = Vocabulary.build(
        list(atlas.var_names), {f: [str(c) for c in atlas.obs[f].cat.categories] for f in ATLAS_FIELDS}
    )
    return atlas, str(h5ad), write_soma(atlas, root / "atlas_soma"), vocab


def test_soma_source_reads_the_cells_of_the_h5ad_file(atlas_stores):
    atlas, h5ad, uri, vocab = atlas_stores
    from_file = CellSource(h5ad, vocab, obs_keys=ATLAS_KEYS, normalize=True)
    from_soma = SomaSource(uri, vocab, obs_keys=ATLAS_KEYS, normalize=True)
    assert from_soma.n_obs == atlas.n_obs
    np.testing.assert_array_equal(from_soma.col_token, from_file.col_token)
    np.testing.assert_array_equal(from_soma.metadata, from_file.metadata)
    rows = np.array([17, 3, 3, 239, 0, 120])  # any order, repeats allowed (an epoch's plan wraps around)
    X_soma, meta_soma = from_soma.read(rows)
    X_file, meta_file = from_file.read(rows)
    assert X_soma.dtype == np.float32
    assert (X_soma != X_file).nnz == 0
    np.testing.assert_array_equal(meta_soma, meta_file)
    # as a corpus item: a URI, an open experiment or a query all become SOMA sources
    with soma.Experiment.open(uri) as experiment:
        for item in (uri, experiment, experiment.axis_query("RNA")):
            (source,) = as_sources(item, vocab, obs_keys=ATLAS_KEYS)
            assert isinstance(source, SomaSource)
            assert source.n_obs == atlas.n_obs
    assert type(as_sources([h5ad, uri], vocab)[0]) is CellSource


def test_a_query_gives_the_training_batches_of_the_same_cells_in_an_h5ad_file(atlas_stores, tmp_path):
    atlas, _, uri, vocab = atlas_stores
    lung = atlas[atlas.obs["organ"] == "Lung"].copy()
    subset = tmp_path / "lung.h5ad"
    lung.write_h5ad(subset)
    spec = TaskSpec(ATLAS_FIELDS)
    reference = make_dataset(
        [CellSource(subset, vocab, obs_keys=ATLAS_KEYS, normalize=True)], vocab, spec=spec, seed=4, block_size=8
    )
    with soma.Experiment.open(uri) as experiment:
        query = experiment.axis_query("RNA", obs_query=soma.AxisQuery(value_filter="organ == 'Lung'"))
        source = SomaSource(query, vocab, obs_keys=ATLAS_KEYS, normalize=True)
    assert source.n_obs == lung.n_obs > 0
    got = make_dataset([source], vocab, spec=spec, seed=4, block_size=8)
    expected = list(reference)
    assert len(expected) > 0
    assert_batches_equal(list(got), expected)
    got.epoch = reference.epoch = 1  # another epoch, another plan: still the same
    assert_batches_equal(list(got), list(reference))


@pytest.fixture
def barcoded_soma(toy_cells, toy_vocab_factory, toy_obs_keys, tmp_path):
    """36 barcoded toy cells (each sentence names its cell) as a SOMA source."""
    adata = toy_cells(36, 20, seed=3, barcodes=True, extra_genes=2)
    vocab = toy_vocab_factory(20, 36)
    return vocab, SomaSource(write_soma(adata, tmp_path / "toy"), vocab, obs_keys=toy_obs_keys)


def test_two_ranks_read_disjoint_cells_and_workers_split_them(barcoded_soma):
    vocab, source = barcoded_soma
    seen = []
    for rank in (0, 1):
        ds = make_dataset([source], vocab, seed=2, rank=rank, world_size=2, block_size=3)
        batches = list(ds)
        assert len(batches) == len(ds)
        seen.append(Counter(c for b in batches for c in cells_of(b, vocab)))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(set(seen[0]) | set(seen[1])) == list(range(36))  # 36 cells, 2 ranks: no padding needed
    assert all(n == 1 for counts in seen for n in counts.values())


def test_spawned_workers_reopen_the_experiment_and_forked_ones_refuse(barcoded_soma):
    vocab, source = barcoded_soma
    source.read(np.arange(4))  # an open handle in this process must not travel
    clone = pickle.loads(pickle.dumps(source))
    assert clone._handle is None
    assert (clone.read(np.arange(36))[0] != source.read(np.arange(36))[0]).nnz == 0
    # rank 1 of 2, two spawned workers each: they give the batches of that rank, each once
    ds = make_dataset([source], vocab, seed=2, chunk_size=6, rank=1, world_size=2)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    assert Counter(map(batch_key, loader)) == Counter(map(batch_key, ds))
    # TileDB hangs in a forked process: a forked worker fails at once, naming the fix
    with pytest.raises(RuntimeError, match="multiprocessing_context='spawn'"):
        list(DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="fork"))


def test_resuming_at_any_batch_gives_the_remaining_batches(barcoded_soma):
    vocab, source = barcoded_soma
    ds = make_dataset([source], vocab, seed=6, block_size=4)
    ds.epoch = 2
    full = list(ds)
    for start in (1, 4, len(full) - 1):
        resumed = make_dataset([source], vocab, seed=6, block_size=4)
        resumed.epoch, resumed.start_batch = 2, start
        assert_batches_equal(list(resumed), full[start:])


def test_bad_queries_name_the_fix(atlas_stores, tmp_path):
    _, h5ad, uri, vocab = atlas_stores
    with soma.Experiment.open(uri) as experiment:
        empty = experiment.axis_query("RNA", obs_query=soma.AxisQuery(value_filter="organ == 'Moon'"))
        with pytest.raises(ValueError, match="selects no cells"):
            SomaSource(empty, vocab, obs_keys=ATLAS_KEYS)
        with pytest.raises(ValueError, match=r"no column 'tissue_general' \(the 'organ' field\).*organ_key"):
            SomaSource(experiment, vocab, obs_keys={"organ": "tissue_general"})
        with pytest.raises(ValueError, match="check its value filter"):
            SomaSource(experiment, vocab, obs_value_filter="tissue_general == 'lung'")
        with pytest.raises(ValueError, match="no measurement 'RNA2'"):
            SomaSource(experiment, vocab, measurement="RNA2")
        with pytest.raises(ValueError, match=r"Pass `layer=` one of .*\['data'\]"):
            SomaSource(experiment, vocab, layer="raw")
        with pytest.raises(ValueError, match="pass `gene_symbols=`"):
            SomaSource(experiment, vocab, gene_symbols="feature_name")
    with pytest.raises(ValueError, match="as a TileDB-SOMA experiment"):
        SomaSource(tmp_path / "nothing_here", vocab)
    with pytest.raises(TypeError, match="Expected a tiledbsoma"):
        SomaSource(np.zeros(3), vocab)
