"""Damaged model files name the file and the fix; saves are atomic; directories of earlier versions still load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from scmulan import SCMULAN, Vocabulary
from scmulan._files import DamagedFileError, human_size
from scmulan.model import _io

RESAVE = "Save the model again"


@pytest.fixture
def copy_dir(saved_dir, tmp_path):
    """A copy of the saved model a test may damage."""
    path = tmp_path / "model"
    shutil.copytree(saved_dir, path)
    return path


def _weights_equal(a: SCMULAN, b: SCMULAN) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_network_configuration_and_weights_round_trip(trained, saved_dir, reference):
    loaded = SCMULAN.load(saved_dir, adata=reference)
    assert loaded.config == trained.config
    assert loaded.config.gene_bag
    assert loaded.module.gene_bag is not None
    assert bool(loaded.module.gene_bag.weight.abs().sum() > 0)  # trained, not the zero start
    assert _weights_equal(loaded, trained)


def test_a_truncated_weights_file_names_file_and_sizes(copy_dir):
    weights = copy_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 4])
    with pytest.raises(DamagedFileError) as info:
        SCMULAN.load(copy_dir)
    text = str(info.value)
    assert text.startswith(f"{weights} is truncated ({human_size(len(data) // 4)} of {human_size(len(data))})")
    assert RESAVE in text
    assert "weights_only" not in text
    assert "SafetensorError" not in text
    # cut inside the header, and an empty file
    weights.write_bytes(data[:20])
    with pytest.raises(DamagedFileError, match=r"model.safetensors is truncated \(20 bytes, less than its own header"):
        SCMULAN.load(copy_dir)
    weights.write_bytes(b"")
    with pytest.raises(DamagedFileError, match=r"model.safetensors is empty"):
        SCMULAN.load(copy_dir)
    weights.write_bytes(b"not a safetensors file at all, but long enough")
    with pytest.raises(DamagedFileError, match=r"model.safetensors is not a safetensors file"):
        SCMULAN.load(copy_dir)


def test_weights_changed_since_the_save_are_refused(copy_dir):
    # a flipped bit in the data loads without complaint from safetensors: the recorded CRC-32 catches it
    weights = copy_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match=rf"{weights} is damaged: its content is not the one saved"):
        SCMULAN.load(copy_dir)


def test_a_truncated_or_invalid_json_file_names_file_and_line(copy_dir):
    vocab = copy_dir / "vocab.json"
    text = vocab.read_text()
    vocab.write_text(text[: len(text) // 2])
    with pytest.raises(DamagedFileError, match=r"vocab.json ends early \(line 1, column \d+\): it is truncated"):
        SCMULAN.load(copy_dir)
    meta = copy_dir / "model.json"
    lines = meta.read_text().splitlines()
    lines[3] = lines[3].replace('"', "'")  # a hand edit that breaks the JSON on line 4
    meta.write_text("\n".join(lines))
    with pytest.raises(DamagedFileError, match=r"model.json is not valid JSON \(line 4, column \d+: Expecting"):
        SCMULAN.load(copy_dir)


def test_metadata_without_model_settings_is_refused(copy_dir):
    meta = json.loads((copy_dir / "model.json").read_text())
    del meta["attr_dict"]["config"]
    (copy_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DamagedFileError, match=r"model.json lacks the model settings \['config'\]"):
        SCMULAN.load(copy_dir)


def test_missing_files_are_named(copy_dir, tmp_path):
    (copy_dir / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"is not a saved scmulan model: missing \['model.safetensors'\]"):
        SCMULAN.load(copy_dir)
    with pytest.raises(ValueError, match="is not a directory"):
        SCMULAN.load(tmp_path / "nowhere")


def _as_earlier_version(path):
    """Turn a saved directory into the layout of earlier versions: metadata in model.pt, no save records."""
    meta = json.loads((path / "model.json").read_text())
    for key in ("save_id", "vocab_sha256", "weights_crc32", "format", "format_version"):
        meta.pop(key)
    torch.save(meta, path / "model.pt")
    (path / "model.json").unlink()


def test_a_directory_of_an_earlier_version_loads_and_is_resaved_without_pickle(copy_dir, trained):
    _as_earlier_version(copy_dir)
    model = SCMULAN.load(copy_dir)
    assert model.vocab == trained.vocab
    assert _weights_equal(model, trained)
    model.save(copy_dir, overwrite=True)  # replaced by the current layout: model.pt is gone
    assert {p.name for p in copy_dir.iterdir()} == {"model.json", "model.safetensors", "vocab.json"}
    assert _weights_equal(SCMULAN.load(copy_dir), trained)


def test_a_garbage_or_unsafe_model_pt_never_suggests_weights_only_false(copy_dir):
    _as_earlier_version(copy_dir)
    legacy = copy_dir / "model.pt"
    data = legacy.read_bytes()
    legacy.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFileError, match=r"model.pt is truncated") as info:
        SCMULAN.load(copy_dir)
    assert "weights_only" not in str(info.value)
    legacy.write_bytes(b"\x80\x04garbage that is not a pickle stream")
    with pytest.raises(DamagedFileError) as info:
        SCMULAN.load(copy_dir)
    assert str(info.value).startswith(f"{legacy} ")
    assert "weights_only" not in str(info.value)

    class Payload:  # a pickle that would run code if loaded without weights_only
        def __reduce__(self):
            return (os.system, ("echo owned",))

    torch.save({"attr_dict": Payload()}, legacy)
    with pytest.raises(DamagedFileError, match="holds Python objects other than tensors") as info:
        SCMULAN.load(copy_dir)
    assert "weights_only" not in str(info.value)


def test_files_of_two_saves_are_never_combined(copy_dir, trained, monkeypatch):
    # the process dies between moving the weights and the metadata into place: the load says so
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("model.json"):
            msg = "disk full"
            raise OSError(msg)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        trained.save(copy_dir, overwrite=True)
    monkeypatch.undo()
    with pytest.raises(DamagedFileError, match=r"model.safetensors and .*model.json belong to different saves"):
        SCMULAN.load(copy_dir)
    assert not [p for p in copy_dir.iterdir() if ".partial-" in p.name]


def test_a_failed_save_leaves_the_previous_model_intact(copy_dir, trained, monkeypatch):
    before = {p.name: p.read_bytes() for p in copy_dir.iterdir()}
    import safetensors.torch

    def half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 1000)
        msg = "no space left on device"
        raise OSError(msg)

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="no space left"):
        trained.save(copy_dir, overwrite=True)
    assert {p.name: p.read_bytes() for p in copy_dir.iterdir()} == before  # untouched, no leftovers
    assert _weights_equal(SCMULAN.load(copy_dir), trained)


KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import safetensors.torch
    from scmulan import SCMULAN

    model = SCMULAN.load(sys.argv[1])
    real = safetensors.torch.save_file

    def save_then_die(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:  # half the weights on disk when the process is killed
            fh.truncate(os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    safetensors.torch.save_file = save_then_die
    with __import__("torch").no_grad():
        for p in model.module.parameters():
            p.add_(1.0)
    model.save(sys.argv[1], overwrite=True)
    """
)


def test_a_killed_save_leaves_the_previous_model_intact(copy_dir, trained):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(copy_dir)], env=env, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL
    leftovers = [p for p in copy_dir.iterdir() if ".partial-" in p.name]
    assert leftovers  # the killed process could not clean up
    assert _weights_equal(SCMULAN.load(copy_dir), trained)  # the previous model, whole
    trained.save(copy_dir, overwrite=True)  # the next save clears what the killed one left
    assert not [p for p in copy_dir.iterdir() if ".partial-" in p.name]


def test_vocabulary_files_name_the_file(tmp_path, trained):
    path = tmp_path / "vocab.json"
    trained.vocab.save(path)
    assert Vocabulary.load(path) == trained.vocab
    path.write_text(path.read_text()[:100])
    with pytest.raises(DamagedFileError, match=rf"{path} ends early"):
        Vocabulary.load(path)
    path.write_text('{"tokens": []}')
    with pytest.raises(DamagedFileError, match=rf"{path} is not a scmulan vocabulary"):
        Vocabulary.load(path)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'none.json'} does not exist"):
        Vocabulary.load(tmp_path / "none.json")


def test_holds_model(saved_dir, tmp_path):
    assert _io.holds_model(saved_dir)
    assert not _io.holds_model(tmp_path)


def test_a_damaged_meta_info_names_the_file(tmp_path):
    path = tmp_path / "meta_info.pt"
    torch.save({"token_set": ["<E>", "G1"], "gene_set": ["G1"]}, path)  # a torch zip, as the original
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFileError, match=rf"{path} is truncated") as info:
        Vocabulary.from_legacy_meta_info(path)
    assert "weights_only" not in str(info.value)
    json_form = tmp_path / "meta_info.json"
    json_form.write_text('{"token_set": ["<E>", "G1"],\n "gene_set": [')
    with pytest.raises(DamagedFileError, match=rf"{json_form} ends early \(line 2"):
        Vocabulary.from_legacy_meta_info(json_form)


def test_a_damaged_corpus_shard_names_the_file(atlas, tmp_path, trained):
    from scmulan.sentence import CellSource

    shard = tmp_path / "shard.h5ad"
    atlas.write_h5ad(shard)
    assert CellSource(shard, trained.vocab).n_obs == atlas.n_obs
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFileError, match=rf"{shard} is truncated \(.* of .*\), so it cannot be read as a corpus"):
        CellSource(shard, trained.vocab)
    shard.write_bytes(b"")
    with pytest.raises(DamagedFileError, match=rf"{shard} is empty"):
        CellSource(shard, trained.vocab)
