"""`SCMULAN.train(corpus=...)` with an annbatch collection (written by annbatch's own writer, see tests/sentence)."""

from __future__ import annotations

import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import zarr

import scmulan

DATA = Path(__file__).resolve().parents[1] / "sentence" / "data"
sys.path.insert(0, str(DATA))
from make_annbatch_collection import ATLAS  # noqa: E402

KEYS = {"organ_key": "organ", "cell_type_key": "cell_type", "sex_key": "sex", "disease_key": "disease"}
RUN = {"max_epochs": 1, "batch_size": 32, "train_size": 1.0, "enable_progress_bar": False, "seed": 3}


def new_model(ref):
    data = ref.copy()
    scmulan.SCMULAN.setup_anndata(data, **KEYS)
    return scmulan.SCMULAN(data, config="tiny", seed=0)


def test_training_on_a_collection_equals_training_on_the_same_cells_in_h5ad(tmp_path):
    import anndata as ad

    with zipfile.ZipFile(DATA / "annbatch_atlas.zarr.zip") as zf:
        zf.extractall(tmp_path)
    collection = tmp_path / "annbatch_atlas.zarr"
    group = zarr.open_group(collection, mode="r")
    keys = sorted((k for k in group if k.startswith("dataset_")), key=lambda k: int(k.split("_")[1]))
    names = np.concatenate([ad.io.read_elem(group[k]["obs"]["_index"]) for k in keys]).astype(str)
    atlas = scmulan.datasets.synthetic_atlas(**ATLAS)
    del atlas.uns["synthetic_atlas"]
    h5ad = tmp_path / "same_cells.h5ad"
    atlas[names].copy().write_h5ad(h5ad)  # the collection's cells in its (shuffled) order
    ref = atlas.copy()  # every category the corpus has
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scmulan.pp.prepare(ref)

    from_file = new_model(ref)
    from_file.train(corpus=[str(h5ad)], **RUN)
    from_collection = new_model(ref)
    from_collection.train(corpus=str(collection), **RUN)
    np.testing.assert_array_equal(
        from_collection.history_["train_loss"].to_numpy(), from_file.history_["train_loss"].to_numpy()
    )
    for name, weight in from_collection.module.state_dict().items():
        assert torch.equal(weight, from_file.module.state_dict()[name]), name
