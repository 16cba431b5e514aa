"""Runs over two CPU processes started the way ``"ddp"`` and ``"fsdp"`` start them (a script relaunched by Lightning).

The DDP run through the Python API is in ``test_fit.py`` (``ddp_spawn``, in-process); these start subprocesses.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scmulan
from scmulan.train import CSentenceTrainingPlan
from scmulan.train._fit import _check_checkpoint_fits

FIELDS = {"organ_key": "organ", "coarse_cell_type_key": "coarse_cell_type", "cell_type_key": "cell_type"}


def _run(command, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_fsdp_over_two_cpu_processes_gives_every_process_the_full_trained_model(atlas, tmp_path):
    data_path = tmp_path / "cells.h5ad"
    atlas[:160].copy().write_h5ad(data_path)
    max_norm = 0.05
    script = Path(__file__).with_name("fsdp_script.py")
    _run([sys.executable, str(script), str(data_path), str(tmp_path), str(max_norm)], cwd=tmp_path)

    data = atlas[:160].copy()
    scmulan.SCMULAN.setup_anndata(data, **FIELDS)
    initial = scmulan.SCMULAN(data, config="tiny", seed=0, dropout=0.1)  # the same initial weights
    start = initial.module.state_dict()
    weights = [torch.load(tmp_path / f"weights{rank}.pt", weights_only=True) for rank in (0, 1)]
    for key, value in start.items():
        for rank in (0, 1):  # full-shaped on both processes, not the shards FSDP trained
            assert weights[rank][key].shape == value.shape, (rank, key)
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert not torch.equal(weights[0]["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    assert not torch.equal(weights[0]["entity_embedding.weight"], start["entity_embedding.weight"])

    records = [json.loads((tmp_path / f"record{rank}.json").read_text()) for rank in (0, 1)]
    assert records[0]["units"] == initial.module.config.n_layer + 1  # one unit per block, plus the root
    before, after = records[0]["before"], records[0]["after"]
    assert len(after) == len(before) > 0
    assert max(before) > max_norm  # the norm over all shards was clipped, on every step
    assert max(after) <= max_norm * (1 + 1e-4)
    assert records[1]["after"] == pytest.approx(after)
    assert len(records[0]["validation_loss"]) == 2  # validated after each epoch, a finite loss
    assert all(math.isfinite(v) for v in records[0]["validation_loss"])

    # the final checkpoint is one file with the full weights: what resuming loads and checks
    (final,) = (tmp_path / "run" / "checkpoints").glob("epoch1-*.ckpt")
    assert final.is_file()
    _check_checkpoint_fits(str(final), CSentenceTrainingPlan(initial.module))
    saved = torch.load(final, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in weights[0].items():
        assert torch.equal(saved[f"net.{key}"], value), key

    loaded = scmulan.SCMULAN.load(tmp_path / "model")  # saved by rank 0 only
    for key, value in loaded.module.state_dict().items():
        assert torch.equal(value, weights[0][key]), key
    labels = loaded.annotate(atlas[:20].copy(), progress=False)
    assert labels["fine"].notna().all()


@pytest.mark.slow
def test_fsdp_resume_is_exact(atlas, tmp_path):
    """Killed after step 7 (mid-epoch: 4 steps per epoch), resumed from step6.ckpt: the weights of a full run."""
    data_path = tmp_path / "cells.h5ad"
    atlas[:160].copy().write_h5ad(data_path)
    script = str(Path(__file__).with_name("fsdp_script.py"))
    _run([sys.executable, script, str(data_path), str(tmp_path / "full"), "1.0"], cwd=tmp_path)
    _run([sys.executable, script, str(data_path), str(tmp_path / "resumed"), "1.0", "7"], cwd=tmp_path)
    assert not (tmp_path / "resumed" / "weights0.pt").exists()  # it crashed
    assert (tmp_path / "resumed" / "run" / "checkpoints" / "step6.ckpt").is_file()
    _run([sys.executable, script, str(data_path), str(tmp_path / "resumed"), "1.0"], cwd=tmp_path)
    full = torch.load(tmp_path / "full" / "weights0.pt", weights_only=True)
    for rank in (0, 1):
        resumed = torch.load(tmp_path / "resumed" / f"weights{rank}.pt", weights_only=True)
        for key, value in full.items():
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)


def test_cli_train_with_ddp_saves_once(atlas, tmp_path):
    raw = scmulan.datasets.synthetic_atlas(n_cells=120, n_genes=160, seed=1)  # raw counts: the CLI prepares them
    raw.write_h5ad(tmp_path / "ref.h5ad")
    script = Path(sys.executable).with_name("scmulan")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scmulan"]
    argv = [
        "train",
        "ref.h5ad",
        "-o",
        "model",
        "--config",
        "tiny",
        "--epochs",
        "1",
        "--cell-type-key",
        "cell_type",
        "--organ-key",
        "organ",
    ]
    hardware = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "-q"]
    done = _run([*command, *argv, *hardware], cwd=tmp_path)
    summaries = [line for line in done.stdout.splitlines() if line.startswith("trained SCMULAN")]
    assert len(summaries) == 1, done.stdout  # printed by rank 0 only
    assert not [line for line in done.stderr.splitlines() if line.startswith("error:")], done.stderr[-2000:]
    model = scmulan.SCMULAN.load(tmp_path / "model")
    assert model.is_trained_
