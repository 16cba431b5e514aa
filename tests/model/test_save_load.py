"""Saving and loading: the files written, identical outputs after loading, attaching data, safe checkpoint reading."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from scmulan import SCMULAN
from scmulan.hub import LEGACY_KEY_MAP, config_from_model_args
from scmulan.nn import CSentenceTransformer


@pytest.fixture(scope="module")
def loaded(saved_dir) -> SCMULAN:
    return SCMULAN.load(saved_dir)


def _organ_and_type(model):
    return {"organ": model.vocab.categories("organ")[0], "cell_type": model.vocab.categories("cell_type")[1]}


def test_the_directory_holds_the_documented_files_and_no_pickle(saved_dir):
    assert {p.name for p in saved_dir.iterdir()} == {"model.json", "model.safetensors", "vocab.json"}
    meta = json.loads((saved_dir / "model.json").read_text())
    assert meta["model_name"] == "SCMULAN"
    assert "attr_dict" in meta
    for path in saved_dir.iterdir():  # no torch.save/pickle file: neither a zip archive nor a pickle stream
        head = path.read_bytes()[:4]
        assert not head.startswith((b"PK", b"\x80")), path.name


def test_loaded_weights_vocabulary_and_settings_are_the_saved_ones(trained, loaded):
    assert loaded.vocab == trained.vocab
    assert loaded.config == trained.config
    saved, restored = trained.module.state_dict(), loaded.module.state_dict()
    assert saved.keys() == restored.keys()
    for key in saved:
        assert torch.equal(saved[key], restored[key]), key
    assert loaded.obs_keys_ == trained.obs_keys_
    assert loaded.metadata_fields_ == trained.metadata_fields_
    assert loaded.trained_tasks_ == trained.trained_tasks_
    assert loaded.is_trained_ is True
    np.testing.assert_array_equal(loaded.debin_table_, trained.debin_table_)
    assert set(loaded.history_) == set(trained.history_)
    assert not loaded.module.training


def test_annotation_is_identical_after_loading(trained, loaded, query):
    labels, emb = trained.annotate(query, return_embedding=True, progress=False)
    labels2, emb2 = loaded.annotate(query, return_embedding=True, progress=False)
    pd.testing.assert_frame_equal(labels, labels2)
    np.testing.assert_array_equal(emb, emb2)


def test_metadata_and_mean_embedding_are_identical_after_loading(trained, loaded, query):
    pd.testing.assert_frame_equal(
        trained.predict_metadata(query, ["organ", "region"], progress=False),
        loaded.predict_metadata(query, ["organ", "region"], progress=False),
    )
    np.testing.assert_array_equal(
        trained.get_latent_representation(query, pooling="mean", progress=False),
        loaded.get_latent_representation(query, pooling="mean", progress=False),
    )


def test_generation_is_identical_after_loading(trained, loaded):
    a = trained.generate(_organ_and_type(trained), n_cells=6, seed=11, progress=False)
    b = loaded.generate(_organ_and_type(trained), n_cells=6, seed=11, progress=False)
    assert (a.X != b.X).nnz == 0
    assert (a.layers["levels"] != b.layers["levels"]).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)


def test_load_attaches_and_registers_new_data(saved_dir, atlas):
    assert "_scvi_uuid" not in atlas.uns
    model = SCMULAN.load(saved_dir, adata=atlas)
    assert model.adata is atlas
    assert "_scvi_uuid" in atlas.uns  # registered with the saved setup
    assert SCMULAN.load(saved_dir).adata is None


def test_load_attaches_a_copy_of_registered_data(saved_dir, atlas):
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    data = atlas.copy()
    model = SCMULAN.load(saved_dir, adata=data)
    assert model.adata is data


def test_load_refuses_data_with_categories_the_model_does_not_know(saved_dir, atlas, trained):
    # Registered afresh with the saved setup, a column holding a category outside the vocabulary would be accepted
    # and silently dropped later (or fail in training with an unrelated message): refuse it, naming the fix.
    cells = atlas.copy()
    fine = cells.obs["cell_type"].astype(str).to_numpy()
    fine[:3] = "Alien"
    fine[3] = "Martian"
    cells.obs["cell_type"] = pd.Categorical(fine)
    with pytest.raises(
        ValueError, match=r"`adata.obs\['cell_type'\]` \('cell_type'\) has categories the model"
    ) as info:
        SCMULAN.load(saved_dir, adata=cells)
    text = str(info.value)
    assert "['Alien', 'Martian']" in text
    assert "`model.finetune(adata)`" in text
    assert "_scvi_uuid" not in cells.uns  # nothing was registered
    assert not [c for c in cells.obs if c.startswith("_scvi")]
    # a close spelling gets a suggestion
    cells = atlas.copy()
    organ = trained.vocab.categories("organ")[0]
    cells.obs["organ"] = pd.Categorical([organ.upper()] * cells.n_obs)
    with pytest.raises(ValueError, match=rf"did you mean \[{organ!r}.* for {organ.upper()!r}"):
        SCMULAN.load(saved_dir, adata=cells)


def _as_counts(adata):
    """The same cells with integer counts in X (what a user passes when they forget scmulan.pp.prepare)."""
    from scipy import sparse

    dense = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    counts = adata.copy()
    counts.X = sparse.csr_matrix(np.rint(np.expm1(dense) * 10).astype(np.float32))
    return counts


def test_load_refuses_raw_counts_before_registering_them(saved_dir, atlas):
    counts = _as_counts(atlas)
    with pytest.raises(ValueError, match=r"`SCMULAN.load\(dir_path, adata\)` needs log-normalised.*pp.prepare"):
        SCMULAN.load(saved_dir, adata=counts)
    assert "_scvi_uuid" not in counts.uns  # nothing was registered


def test_load_refuses_registered_data_the_vocabulary_does_not_cover(saved_dir, atlas):
    # data the user registered (with its own setup) are checked too: an unknown category, and a field the model lacks
    cells = atlas.copy()
    fine = cells.obs["cell_type"].astype(str).to_numpy()
    fine[0] = "Alien"
    cells.obs["cell_type"] = pd.Categorical(fine)
    SCMULAN.setup_anndata(cells, cell_type_key="cell_type")
    with pytest.raises(ValueError, match=r"has categories the model does not know: \['Alien'\]"):
        SCMULAN.load(saved_dir, adata=cells)
    cells = atlas.copy()
    cells.obs["batch"] = pd.Categorical(["b1", "b2"] * (cells.n_obs // 2))
    SCMULAN.setup_anndata(cells, cell_type_key="cell_type", extra_metadata_keys=["batch"])
    with pytest.raises(ValueError, match=r"`adata.obs\['batch'\]` \('batch'\) has categories .*\['b1', 'b2'\]"):
        SCMULAN.load(saved_dir, adata=cells)


def test_save_anndata_round_trips_the_training_data(trained, tmp_path):
    trained.save(tmp_path / "m", save_anndata=True)
    model = SCMULAN.load(tmp_path / "m")
    assert model.adata is not None
    assert model.adata.n_obs == trained.adata.n_obs
    assert list(model.adata.var_names) == list(trained.adata.var_names)


def test_saving_over_a_model_needs_overwrite(trained, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(ValueError, match=re.escape("overwrite=True")):
        trained.save(tmp_path / "m")
    trained.save(tmp_path / "m", overwrite=True)
    assert SCMULAN.load(tmp_path / "m").vocab == trained.vocab


def test_a_vocabulary_that_does_not_fit_the_weights_is_refused(saved_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved_dir, broken)
    vocab = json.loads((broken / "vocab.json").read_text())
    vocab["tokens"] = vocab["tokens"][:-1]
    (broken / "vocab.json").write_text(json.dumps(vocab))
    # an edited vocabulary is not the one saved with the model: refused before anything is built
    with pytest.raises(ValueError, match=r"vocab.json is not the vocabulary saved with .*model.json"):
        SCMULAN.load(broken)
    meta = json.loads((broken / "model.json").read_text())
    meta.pop("vocab_sha256")  # without the record (as in directories of earlier versions), the sizes are checked
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"Vocabulary \(\d+ entities\) and network \(\d+\) do not match"):
        SCMULAN.load(broken)


def test_a_directory_without_a_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a saved scmulan model"):
        SCMULAN.load(tmp_path)


# ---------------------------------------------------------------------------------------------- legacy import

TOKENS = {
    "organ": ["Lung"],
    "region": ["Upper"],
    "MCT": ["T"],
    "cell_type": ["Tc"],
    "donor_gender": ["F"],
    "age_bin": ["20-30"],
    "seq_tech": ["10X"],
    "sample_status": ["Healthy"],
}
GENES = ["CD3E", "MS4A1", "LYZ", "NKG7", "GNLY"]


def _meta_info(path):
    """A miniature original ``meta_info`` (JSON form): 17 tokens."""
    token_set = ["<E>", *GENES, *(t for labels in TOKENS.values() for t in labels), "<PCT>", "<SPToken1>", "<SPToken3>"]
    path.write_text(json.dumps({"token_set": token_set, "gene_set": GENES, **TOKENS}))
    return len(token_set)


def _legacy_checkpoint(path, vocab_size):
    """A checkpoint in the original format (nanoGPT names) of a random network."""
    args = {"vocab_size": vocab_size, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0, "bias": False,
            "block_size": 1550, "expression_level": 10, "ele": 1}  # fmt: skip
    net = CSentenceTransformer(config_from_model_args(args))
    inverse = [
        (re.compile("^" + re.escape(dst).replace(r"\{i\}", r"(\d+)") + "$"), src.replace("{i}", r"\1"))
        for src, dst in LEGACY_KEY_MAP.items()
    ]
    state = {}
    for key, tensor in net.state_dict().items():
        pattern, name = next((p, n) for p, n in inverse if p.match(key))
        state[pattern.sub(name, key)] = tensor
    torch.save({"model": state, "model_args": args}, path)
    return net


def test_a_legacy_checkpoint_with_its_vocabulary_loads(tmp_path):
    n = _meta_info(tmp_path / "meta_info.json")
    net = _legacy_checkpoint(tmp_path / "ckpt.pt", n)
    model = SCMULAN.from_legacy_checkpoint(tmp_path / "ckpt.pt", tmp_path / "meta_info.json")
    assert len(model.vocab) == n
    assert model.vocab.genes == GENES
    assert model.legacy_ is True
    assert model.trained_tasks_ == ["generation", "annotation", "metadata"]  # the original was pre-trained on all
    for key, tensor in net.state_dict().items():
        assert torch.equal(model.module.state_dict()[key], tensor), key


def test_a_legacy_vocabulary_of_another_size_is_refused(tmp_path):
    n = _meta_info(tmp_path / "meta_info.json")
    _legacy_checkpoint(tmp_path / "ckpt.pt", n + 1)
    with pytest.raises(ValueError, match=f"has {n} entities but the checkpoint's model has {n + 1}"):
        SCMULAN.from_legacy_checkpoint(tmp_path / "ckpt.pt", tmp_path / "meta_info.json")
