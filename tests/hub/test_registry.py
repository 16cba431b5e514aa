"""The pretrained registry (pooch) against a local HTTP server on 127.0.0.1: download, cache, SHA-256 checks,
offline ``path=`` use and the errors a user sees. No other network is touched."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
from functools import partial

import anndata as ad
import numpy as np
import pytest
import torch

import scmulan
from scmulan.hub import CACHE_ENV, PRETRAINED, RemoteFile, fetch_pretrained

NAME = "scmulan-v1"
# The published SHA-256 of the original meta_info.pt, as registered before any test patches the registry.
PUBLISHED_META_SHA256 = PRETRAINED[NAME]["meta_info"].sha256


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0: any free port) serving ``root``; counts GET requests."""

    def __init__(self, root):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Counting(_Handler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Counting, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def stop(self):
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False


@pytest.fixture
def served(tmp_path, legacy_dir, monkeypatch):
    """Copies of the reference checkpoint and vocabulary behind a local server, registered as ``scmulan-v1``."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.delenv(CACHE_ENV, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(legacy_dir / "tiny_ckpt.pt", root / "tiny_ckpt.pt")
    shutil.copy(legacy_dir / "meta_info.pt", root / "meta_info.pt")
    server = LocalServer(root)
    register(monkeypatch, server.url)
    yield server
    server.stop()


def register(monkeypatch, url, meta_sha256=PUBLISHED_META_SHA256, ckpt_sha256=None):
    monkeypatch.setitem(
        PRETRAINED,
        NAME,
        {
            "checkpoint": RemoteFile(f"{url}/tiny_ckpt.pt", "ckpt_scMulan.pt", ckpt_sha256),
            "meta_info": RemoteFile(f"{url}/meta_info.pt", "meta_info.pt", meta_sha256),
        },
    )


def _annotates(model, legacy_dir, n=5):
    cells = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")[:n].copy()
    scmulan.tl.annotate(cells, model, progress=False)
    assert cells.obsm["X_scmulan"].shape == (n, model.module.config.n_embd)
    assert np.isfinite(cells.obsm["X_scmulan"]).all()
    fine = cells.obs["scmulan_fine"].astype(str)
    assert set(fine) <= set(model.vocab.categories("cell_type")) | {"Unclassified"}


def test_the_reference_vocabulary_is_the_published_file(legacy_dir):
    assert PUBLISHED_META_SHA256 is not None
    assert sha256(legacy_dir / "meta_info.pt") == PUBLISHED_META_SHA256


def test_download_cache_and_load(served, tmp_path, legacy_dir):
    cache = tmp_path / "cache"
    model = scmulan.load_pretrained(NAME, cache_dir=cache, progressbar=False)
    assert sorted(served.requests) == ["/meta_info.pt", "/tiny_ckpt.pt"]
    folder = cache / NAME
    assert sha256(folder / "ckpt_scMulan.pt") == sha256(legacy_dir / "tiny_ckpt.pt")
    assert sha256(folder / "meta_info.pt") == PUBLISHED_META_SHA256  # the known hash was accepted
    # the checkpoint has no published hash: the first download's is recorded; the known one is not
    recorded = json.loads((folder / "sha256.json").read_text())
    assert recorded == {"ckpt_scMulan.pt": sha256(legacy_dir / "tiny_ckpt.pt")}
    assert model.module.config.n_embd == 64
    assert len(model.vocab) == 2222
    _annotates(model, legacy_dir)
    # a second load uses the cache: nothing is downloaded again, and it works with the server gone
    served.stop()
    again = scmulan.load_pretrained(NAME, cache_dir=cache, progressbar=False)
    assert len(served.requests) == 2
    _annotates(again, legacy_dir)


def test_cache_from_the_environment(served, tmp_path, monkeypatch):
    cache = tmp_path / "env_cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    files = fetch_pretrained(NAME, progressbar=False)
    assert files["checkpoint"] == cache / NAME / "ckpt_scMulan.pt"
    assert files["meta_info"] == cache / NAME / "meta_info.pt"
    assert files["checkpoint"].is_file()
    assert (cache / NAME / "sha256.json").is_file()
    # an explicit cache_dir wins over the environment
    other = tmp_path / "explicit"
    files = fetch_pretrained(NAME, cache_dir_=other, progressbar=False)
    assert files["checkpoint"].parent == other / NAME


def test_a_damaged_hash_record_names_the_file(served, tmp_path):
    cache = tmp_path / "cache"
    fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)
    record = cache / NAME / "sha256.json"
    record.write_text(record.read_text()[:10])
    with pytest.raises(ValueError, match=rf"{record} ends early .*Delete it together with the files it lists"):
        fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)
    record.write_text('["not", "a", "mapping"]')
    with pytest.raises(ValueError, match=rf"{record} is not a record of SHA-256 hashes"):
        fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)


def test_a_tampered_cached_checkpoint_is_never_used(served, tmp_path, legacy_dir, monkeypatch):
    cache = tmp_path / "cache"
    fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)
    cached = cache / NAME / "ckpt_scMulan.pt"
    good = sha256(cached)
    cached.write_bytes(cached.read_bytes() + b"tampered")
    # offline: the tampered file fails its recorded hash and cannot be replaced -> an error, not the bad file
    served.stop()
    with pytest.raises((OSError, ValueError)):
        fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)
    # the server now serves a replaced file too: the new download fails the recorded hash and is rejected
    (served.root / "tiny_ckpt.pt").write_bytes(b"replaced by someone")
    server = LocalServer(served.root)
    try:
        register(monkeypatch, server.url)
        with pytest.raises(ValueError, match="SHA-256"):
            fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)
        assert sha256(cached) != good  # still the tampered copy: nothing verified replaced it
        # the genuine file is served again: the cache is repaired by a verified download
        shutil.copy(legacy_dir / "tiny_ckpt.pt", served.root / "tiny_ckpt.pt")
        files = fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)
        assert sha256(files["checkpoint"]) == good
    finally:
        server.stop()


def test_a_wrong_known_hash_is_rejected(served, tmp_path, monkeypatch):
    register(monkeypatch, served.url, meta_sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256"):
        fetch_pretrained(NAME, cache_dir_=cache, progressbar=False)
    assert not (cache / NAME / "meta_info.pt").exists()  # the file was not kept


def test_a_wrong_known_checkpoint_hash_is_rejected(served, tmp_path, monkeypatch):
    register(monkeypatch, served.url, ckpt_sha256="f" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256"):
        scmulan.load_pretrained(NAME, cache_dir=cache, progressbar=False)
    assert not (cache / NAME / "ckpt_scMulan.pt").exists()


@pytest.fixture
def offline_copy(served, tmp_path, legacy_dir):
    """The files under their usual names in a user folder; the server is stopped (any download would fail)."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    shutil.copy(legacy_dir / "tiny_ckpt.pt", folder / "ckpt_scMulan.pt")
    shutil.copy(legacy_dir / "meta_info.pt", folder / "meta_info.pt")
    served.stop()
    return folder


def test_offline_path_directory(offline_copy, served, tmp_path, legacy_dir):
    model = scmulan.load_pretrained(NAME, path=offline_copy, cache_dir=tmp_path / "unused", progressbar=False)
    assert served.requests == []
    assert not (tmp_path / "unused").exists()
    _annotates(model, legacy_dir)


def test_offline_path_checkpoint_file(offline_copy, served, tmp_path, legacy_dir):
    files = fetch_pretrained(NAME, path=offline_copy / "ckpt_scMulan.pt", cache_dir_=tmp_path / "unused")
    assert files == {"checkpoint": offline_copy / "ckpt_scMulan.pt", "meta_info": offline_copy / "meta_info.pt"}
    model = scmulan.load_pretrained(NAME, path=offline_copy / "ckpt_scMulan.pt", progressbar=False)
    assert served.requests == []
    _annotates(model, legacy_dir, n=3)


def test_offline_path_with_a_corrupted_vocabulary_is_rejected(offline_copy, served):
    meta = offline_copy / "meta_info.pt"
    meta.write_bytes(meta.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="SHA-256"):
        scmulan.load_pretrained(NAME, path=offline_copy, progressbar=False)
    assert served.requests == []


def test_paths_with_a_tilde_are_expanded(offline_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(offline_copy.parent))
    files = fetch_pretrained(NAME, path=f"~/{offline_copy.name}", cache_dir_="~/cache")
    assert files["checkpoint"] == offline_copy / "ckpt_scMulan.pt"
    monkeypatch.setenv(CACHE_ENV, "~/env_cache")
    assert scmulan.hub.cache_dir() == offline_copy.parent / "env_cache"


def test_path_that_does_not_exist_or_lacks_the_checkpoint(offline_copy, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        fetch_pretrained(NAME, path=tmp_path / "nowhere")
    (offline_copy / "ckpt_scMulan.pt").unlink()
    with pytest.raises(ValueError, match="ckpt_scMulan.pt"):
        fetch_pretrained(NAME, path=offline_copy)


def test_path_checkpoint_with_the_vocabulary_downloaded(served, tmp_path, legacy_dir):
    folder = tmp_path / "only_ckpt"
    folder.mkdir()
    shutil.copy(legacy_dir / "tiny_ckpt.pt", folder / "ckpt_scMulan.pt")
    files = fetch_pretrained(NAME, path=folder, cache_dir_=tmp_path / "cache", progressbar=False)
    assert served.requests == ["/meta_info.pt"]
    assert files["checkpoint"] == folder / "ckpt_scMulan.pt"
    assert files["meta_info"] == tmp_path / "cache" / NAME / "meta_info.pt"


def test_an_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="scmulan-v1"):
        scmulan.load_pretrained("scmulan-v9")
    with pytest.raises(ValueError, match="available"):
        fetch_pretrained("nope")


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


def test_an_unreachable_url_tells_the_user_to_pass_path(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    register(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(OSError, match="path=") as info:
        scmulan.load_pretrained(NAME, cache_dir=tmp_path / "cache", progressbar=False)
    assert "127.0.0.1" in str(info.value)


@pytest.fixture
def fresh_resolved():
    """No pretrained model resolved by name before or after the test."""
    from scmulan.model import _pretrained

    _pretrained.clear_pretrained_cache()
    yield _pretrained
    _pretrained.clear_pretrained_cache()


@pytest.mark.filterwarnings("ignore:This model has no de-binning table")  # the original's output scale, not tested here
def test_a_pretrained_name_given_to_tl_is_loaded_once_per_process(
    served, tmp_path, legacy_dir, monkeypatch, fresh_resolved
):
    # every load goes through fetch_pretrained (the SHA-256 checks of ~1.5 GB for the real model) and the conversion
    fetched, converted = [], []
    fetch, convert = scmulan.hub.fetch_pretrained, scmulan.SCMULAN.from_legacy_checkpoint.__func__
    monkeypatch.setattr(scmulan.hub, "fetch_pretrained", lambda *a, **k: fetched.append(a) or fetch(*a, **k))
    monkeypatch.setattr(
        scmulan.SCMULAN,
        "from_legacy_checkpoint",
        classmethod(lambda cls, *a, **k: converted.append(a) or convert(cls, *a, **k)),
    )
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cells = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")[:4].copy()
    scmulan.tl.annotate(cells, NAME, progress=False)
    assert len(fetched) == len(converted) == 1
    first = cells.obs["scmulan_fine"].astype(str).tolist()
    scmulan.tl.embed(cells, NAME, progress=False)
    scmulan.tl.annotate(cells, NAME, progress=False)
    scmulan.tl.generate(NAME, {"organ": "Blood"}, n_cells=1, max_length=8, progress=False)
    assert len(fetched) == len(converted) == 1  # later uses neither re-check nor re-convert the files
    assert cells.obs["scmulan_fine"].astype(str).tolist() == first
    model = fresh_resolved.resolve_model(NAME)
    assert fresh_resolved.resolve_model(NAME) is model
    assert scmulan.load_pretrained(NAME, progressbar=False) is not model  # load_pretrained: always a new model
    # another download cache is another entry
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "other_cache"))
    assert fresh_resolved.resolve_model(NAME) is not model
    fresh_resolved.clear_pretrained_cache()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert fresh_resolved.resolve_model(NAME) is not model


def test_from_pretrained_is_load_pretrained(offline_copy, served, legacy_dir):
    import inspect

    def parameters(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert parameters(scmulan.SCMULAN.from_pretrained) == parameters(scmulan.load_pretrained)
    model = scmulan.SCMULAN.from_pretrained(NAME, path=offline_copy, progressbar=False)
    assert isinstance(model, scmulan.SCMULAN)
    assert served.requests == []
    reference = scmulan.load_pretrained(NAME, path=offline_copy, progressbar=False)
    assert model.vocab == reference.vocab
    state, expected = model.module.state_dict(), reference.module.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert model.legacy_ is True
    _annotates(model, legacy_dir, n=3)
