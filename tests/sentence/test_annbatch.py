"""annbatch collections as a corpus: the same cells and batches as the .h5ad path, sharding, workers, resume, errors.

The collection is written by annbatch's own writer (``DatasetCollection.add_adatas``): the committed one
(``data/annbatch_atlas.zarr.zip``, written by ``data/make_annbatch_collection.py`` with annbatch 0.3.1, which needs
Python >= 3.12) and, where annbatch is installed, one written now.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
import zipfile
from collections import Counter
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

import scmulan
from scmulan.sentence import AnnbatchSource, CellSource, TaskSpec, TrainingSentenceDataset, as_sources
from scmulan.vocab import Vocabulary

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from make_annbatch_collection import ATLAS, write_collection  # noqa: E402

FIELDS = ("organ", "coarse_cell_type", "cell_type", "sex", "disease")
KEYS = {f: f for f in FIELDS}
HAS_ANNBATCH = importlib.util.find_spec("annbatch") is not None


def make_dataset(sources, vocab, **kwargs) -> TrainingSentenceDataset:
    task_ids = {t: vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    kwargs = {"batch_size": 4, "chunk_size": 12, "block_size": 8, **kwargs}
    return TrainingSentenceDataset(
        sources, TaskSpec(FIELDS), task_ids, end_id=vocab.end_id, pad_id=vocab.pad_id, **kwargs
    )


def batch_key(batch: dict[str, torch.Tensor]) -> tuple:
    return tuple((k, tuple(v.shape), v.numpy().tobytes()) for k, v in sorted(batch.items()))


def cell_names(path: Path) -> np.ndarray:
    """The collection's cells in its row order (annbatch shuffles them across its datasets)."""
    group = zarr.open_group(path, mode="r")
    keys = sorted((k for k in group if k.startswith("dataset_")), key=lambda k: int(k.split("_")[1]))
    return np.concatenate([ad.io.read_elem(group[k]["obs"]["_index"]) for k in keys]).astype(str)


@pytest.fixture(scope="module", params=["committed", "written now"])
def stores(request, tmp_path_factory):
    """The atlas as an .h5ad file in the collection's cell order, the collection, and the vocabulary."""
    root = tmp_path_factory.mktemp("annbatch")
    atlas = scmulan.datasets.synthetic_atlas(**ATLAS)
    del atlas.uns["synthetic_atlas"]
    if request.param == "committed":
        with zipfile.ZipFile(DATA / "annbatch_atlas.zarr.zip") as zf:
            zf.extractall(root)
        collection = root / "annbatch_atlas.zarr"
    elif HAS_ANNBATCH:
        atlas.write_h5ad(root / "atlas.h5ad")
        collection = write_collection(root / "atlas.h5ad", root / "now.zarr", seed=5)
    else:
        pytest.skip("annbatch is not installed (it needs Python >= 3.12)")
    names = cell_names(collection)
    assert sorted(names) == sorted(atlas.obs_names)
    in_order = atlas[names].copy()
    h5ad = root / "in_collection_order.h5ad"
    in_order.write_h5ad(h5ad)
    vocab = Vocabulary.build(list(atlas.var_names), {f: [str(c) for c in atlas.obs[f].cat.categories] for f in FIELDS})
    return str(h5ad), str(collection), vocab


def test_the_collection_holds_the_cells_of_the_h5ad_file(stores):
    h5ad, collection, vocab = stores
    from_file = CellSource(h5ad, vocab, obs_keys=KEYS, normalize=True)
    source = AnnbatchSource(collection, vocab, obs_keys=KEYS, normalize=True)
    assert source.n_obs == from_file.n_obs == ATLAS["n_cells"]
    np.testing.assert_array_equal(source.col_token, from_file.col_token)
    np.testing.assert_array_equal(source.metadata, from_file.metadata)
    rows = np.array([17, 3, 3, 119, 0, 49, 50, 100])  # across datasets, any order, repeats
    X, meta = source.read(rows)
    X_file, meta_file = from_file.read(rows)
    assert X.dtype == np.float32
    assert X.shape == X_file.shape
    assert (X != X_file).nnz == 0
    np.testing.assert_array_equal(meta, meta_file)
    (found,) = as_sources(collection, vocab, obs_keys=KEYS)
    assert isinstance(found, AnnbatchSource)
    (from_group,) = as_sources(zarr.open_group(collection, mode="r"), vocab, obs_keys=KEYS)
    assert isinstance(from_group, AnnbatchSource)


def test_training_batches_equal_the_h5ad_path_and_resume_exactly(stores):
    h5ad, collection, vocab = stores
    source = AnnbatchSource(collection, vocab, obs_keys=KEYS, normalize=True)
    reference = list(make_dataset([CellSource(h5ad, vocab, obs_keys=KEYS, normalize=True)], vocab, seed=4))
    full = list(make_dataset([source], vocab, seed=4))
    assert [batch_key(b) for b in full] == [batch_key(b) for b in reference]
    for start in (1, len(full) // 2, len(full) - 1):
        resumed = make_dataset([source], vocab, seed=4)
        resumed.start_batch = start
        assert [batch_key(b) for b in resumed] == [batch_key(b) for b in full[start:]]


def test_two_ranks_read_disjoint_cells_and_workers_split_them(stores):
    _, collection, vocab = stores
    source = AnnbatchSource(collection, vocab, obs_keys=KEYS, normalize=True)
    read = []
    original = source.read

    def recording(rows):
        read[-1].extend(np.asarray(rows).tolist())
        return original(rows)

    source.read = recording
    for rank in (0, 1):
        read.append([])
        assert len(list(make_dataset([source], vocab, seed=2, rank=rank, world_size=2))) > 0
    assert not set(read[0]) & set(read[1])
    assert sorted(read[0] + read[1]) == list(range(ATLAS["n_cells"]))  # 120 cells, 2 ranks: no padding
    del source.read
    # DataLoader workers, forked and spawned, read the collection again and give this rank's batches once each
    clone = pickle.loads(pickle.dumps(source))
    assert (clone.read(np.arange(60))[0] != source.read(np.arange(60))[0]).nnz == 0
    ds = make_dataset([source], vocab, seed=2, rank=1, world_size=2)
    expected = Counter(map(batch_key, ds))
    for context in ("fork", "spawn"):
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=context)
        assert Counter(map(batch_key, loader)) == expected, context


def test_bad_collections_name_the_fix(stores, tmp_path):
    _, collection, vocab = stores
    with pytest.raises(ValueError, match=r"no column 'tissue_general' \(the 'organ' field\).*organ_key"):
        AnnbatchSource(collection, vocab, obs_keys={"organ": "tissue_general"})
    with pytest.raises(ValueError, match="no layer 'counts'"):
        AnnbatchSource(collection, vocab, layer="counts")
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(ValueError, match=r"not an annbatch collection.*add_adatas"):
        AnnbatchSource(plain, vocab)
    with pytest.raises(ValueError, match="as an annbatch collection"):
        AnnbatchSource(tmp_path / "missing.zarr", vocab)
    empty = zarr.open_group(tmp_path / "empty.zarr", mode="w")
    empty.attrs.update({"encoding-type": "annbatch-preshuffled", "encoding-version": "0.1.0"})
    with pytest.raises(ValueError, match="has no cells"):
        AnnbatchSource(empty, vocab)


def test_the_collection_names_its_cells_in_row_order(stores):
    # the index of inference results on a collection (model.annotate(collection))
    _, collection, vocab = stores
    source = AnnbatchSource(collection, vocab)
    assert list(source.obs_names) == list(cell_names(collection))
