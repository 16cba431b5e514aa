"""Hugging Face Hub: push (uploads captured, never sent) and load (a local Hub cache, offline, network blocked)."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scmulan

huggingface_hub = pytest.importorskip("huggingface_hub")

REPO = "someone/scmulan-atlas"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CARD = {
    "training_data": "synthetic_atlas: 150 cells, 3 organs, 4 technologies",
    "metrics": {"annotation macro-F1 (held-out)": 0.875},
    "license": "mit",
    "description": "A test model.",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test here may reach the network: Hub offline mode on, socket connections refused, no user token."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))

    def refuse(*args, **kwargs):
        msg = "a hub test tried to open a network connection"
        raise AssertionError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def atlas():
    adata = scmulan.datasets.synthetic_atlas(n_cells=150, n_genes=200, seed=0)
    scmulan.pp.prepare(adata)
    return adata


@pytest.fixture(scope="module")
def trained(atlas):
    ref = atlas.copy()
    scmulan.SCMULAN.setup_anndata(
        ref, organ_key="organ", coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type"
    )
    model = scmulan.SCMULAN(ref, config="tiny")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train(max_epochs=1, batch_size=32, tasks=("generation", "annotation"), enable_progress_bar=False)
    torch.set_num_threads(previous)
    return model


@pytest.fixture
def uploads(monkeypatch, tmp_path):
    """Replace the Hub's write calls: record ``create_repo`` and copy what ``upload_folder`` would send."""
    calls = {"create_repo": [], "upload_folder": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, **kwargs})

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        copy = tmp_path / f"pushed{len(calls['upload_folder'])}"
        shutil.copytree(folder_path, copy)
        calls["upload_folder"].append({"repo_id": repo_id, "folder": copy, **kwargs})
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}",
            commit_message=kwargs.get("commit_message", ""),
            commit_description="",
            oid=COMMIT,
        )

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def put_in_cache(cache: Path, repo_id: str, files: Path, commit: str = COMMIT, refs: tuple[str, ...] = ("main",)):
    """Lay ``files`` out as the Hugging Face cache holds a downloaded snapshot of ``repo_id``."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(files, storage / "snapshots" / commit)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (storage / "refs" / ref).write_text(commit)
    return storage / "snapshots" / commit


def test_push_uploads_model_card_and_scvi_hub_metadata(trained, uploads, tmp_path):
    info = trained.push_to_hub(REPO, private=True, **CARD)

    assert info.oid == COMMIT
    assert uploads["create_repo"] == [{"repo_id": REPO, "repo_type": "model", "private": True, "exist_ok": True}]
    (upload,) = uploads["upload_folder"]
    assert upload["repo_id"] == REPO
    files = {p.name for p in upload["folder"].iterdir()}
    trained.save(tmp_path / "saved")
    saved = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {"model.safetensors", "vocab.json"} <= saved
    assert files == saved | {"README.md", "_scvi_required_metadata.json"}

    card = huggingface_hub.ModelCard((upload["folder"] / "README.md").read_text())
    assert card.data.library_name == "scmulan"
    assert card.data.license == "mit"
    for tag in ("model_cls_name:SCMULAN", "modality:rna", "annotated:True", "scvi-tools"):
        assert tag in card.data.tags
    assert {f"tissue:{organ}" for organ in trained.vocab.categories("organ")} <= set(card.data.tags)
    text = card.text
    assert f"**Vocabulary size**: {len(trained.vocab):,} tokens ({len(trained.vocab.genes):,} genes" in text
    assert "**Tasks the model was trained on**: generation, annotation" in text
    assert CARD["training_data"] in text
    assert "Registered training data: 150 cells x 200 genes." in text
    assert "| annotation macro-F1 (held-out) | 0.875 |" in text
    assert f'scmulan.SCMULAN.from_hub("{REPO}"' in text
    assert "# Model Description" in text
    assert "A test model." in text

    from scvi.hub import HubMetadata

    meta = HubMetadata(**json.loads((upload["folder"] / "_scvi_required_metadata.json").read_text()))
    assert (meta.model_cls_name, meta.model_parent_module) == ("SCMULAN", "scmulan")


def test_pushed_model_loads_back_offline_identical(trained, uploads, atlas, tmp_path):
    trained.push_to_hub(REPO, **CARD)
    cache = tmp_path / "hub_cache"
    put_in_cache(cache, REPO, uploads["upload_folder"][0]["folder"], refs=("main", "v1"))

    for revision in (None, "v1", COMMIT):
        loaded = scmulan.SCMULAN.from_hub(REPO, revision=revision, cache_dir=cache)
        assert loaded.vocab == trained.vocab
        assert loaded.trained_tasks_ == trained.trained_tasks_
        for name, value in trained.module.state_dict().items():
            torch.testing.assert_close(loaded.module.state_dict()[name], value.cpu(), rtol=0, atol=0)
    query = atlas[:20].copy()
    query.obs = query.obs[[]]
    np.testing.assert_allclose(
        loaded.get_latent_representation(query, progress=False),
        trained.get_latent_representation(query, progress=False),
        rtol=1e-5,
        atol=1e-6,
    )


def test_scvi_hub_model_loads_the_published_folder(trained, tmp_path):
    from scvi.hub import HubModel

    folder = scmulan.hub.save_for_hub(trained, tmp_path / "model", repo_id=REPO, **CARD)
    hub_model = HubModel(str(folder))
    assert hub_model.metadata.model_cls_name == "SCMULAN"
    hub_model.load_model(adata=trained.adata.copy(), device="cpu")
    assert isinstance(hub_model.model, scmulan.SCMULAN)
    assert hub_model.model.vocab == trained.vocab


def test_repo_without_a_model_is_refused(tmp_path):
    readme_only = tmp_path / "readme_only"
    readme_only.mkdir()
    (readme_only / "README.md").write_text("# A dataset card\n")
    cache = tmp_path / "hub_cache"
    put_in_cache(cache, "someone/not-a-model", readme_only)
    with pytest.raises(
        ValueError, match=r"holds no scmulan model: \['model.json', 'model.safetensors'.*model.push_to_hub"
    ):
        scmulan.SCMULAN.from_hub("someone/not-a-model", cache_dir=cache)


def test_repo_with_another_scvi_hub_model_is_refused(tmp_path):
    scvi_repo = tmp_path / "scvi_repo"
    scvi_repo.mkdir()
    (scvi_repo / "model.pt").write_bytes(b"")  # scvi-tools' single model file
    meta = {"scvi_version": "1.2.0", "anndata_version": "0.10.0", "model_cls_name": "SCVI"}
    (scvi_repo / "_scvi_required_metadata.json").write_text(json.dumps(meta))
    cache = tmp_path / "hub_cache"
    put_in_cache(cache, "someone/an-scvi-model", scvi_repo)
    with pytest.raises(ValueError, match=r"holds a SCVI model .*scvi\.hub\.HubModel\.pull_from_huggingface_hub"):
        scmulan.SCMULAN.from_hub("someone/an-scvi-model", cache_dir=cache)


def test_uncached_repo_offline_names_the_fix(tmp_path):
    with pytest.raises(OSError, match="not in the local Hugging Face cache.*Download it once with network access"):
        scmulan.SCMULAN.from_hub(REPO, cache_dir=tmp_path / "empty_cache")


def test_unknown_repo_and_revision_name_the_fix(monkeypatch):
    import httpx2
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    for error, pattern in (
        (RepositoryNotFoundError("404", response=response), "No model repository 'someone/x'.*token="),
        (RevisionNotFoundError("404", response=response), "has no revision 'v9': pass a branch, tag or commit"),
    ):

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
        with pytest.raises(ValueError, match=pattern):
            scmulan.SCMULAN.from_hub("someone/x", revision="v9")


def test_untrained_model_is_not_pushed(atlas, uploads):
    ref = atlas.copy()
    scmulan.SCMULAN.setup_anndata(ref, cell_type_key="cell_type")
    model = scmulan.SCMULAN(ref, config="tiny")
    with pytest.raises(ValueError, match=r"not trained: train it \(`model.train"):
        model.push_to_hub(REPO)
    assert uploads == {"create_repo": [], "upload_folder": []}


def test_without_huggingface_hub_the_error_names_the_extra(trained, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'scmulan\[hub\]'"):
        trained.push_to_hub(REPO)
    with pytest.raises(ImportError, match=r"pip install 'scmulan\[hub\]'"):
        scmulan.SCMULAN.from_hub(REPO, cache_dir=tmp_path)
    assert not (tmp_path / "model.pt").exists()
