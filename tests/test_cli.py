"""The ``scmulan`` command line, run in-process through ``scmulan.cli.main`` (one subprocess for the script)."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scmulan
from scmulan.cli import main

OBS_KEYS = ["--organ-key", "organ", "--region-key", "region"]
OBS_KEYS += ["--coarse-cell-type-key", "coarse_cell_type", "--cell-type-key", "cell_type"]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Raw-count training cells (with labels) and query cells (no labels, never registered)."""
    root = tmp_path_factory.mktemp("cli")
    ref = scmulan.datasets.synthetic_atlas(n_cells=200, n_genes=160, seed=0)
    query = scmulan.datasets.synthetic_atlas(n_cells=30, n_genes=160, seed=1)
    query.obs = query.obs[[]]
    paths = {"ref": root / "ref.h5ad", "query": root / "query.h5ad", "root": root}
    ref.write_h5ad(paths["ref"])
    query.write_h5ad(paths["query"])
    return paths


@pytest.fixture(scope="module")
def model_dir(files) -> Path:
    """A tiny model trained for one epoch by ``scmulan train``."""
    out = files["root"] / "model"
    argv = ["train", str(files["ref"]), "-o", str(out), "--config", "tiny", "--epochs", "1", "--batch-size", "32"]
    assert main([*argv, *OBS_KEYS, "--accelerator", "cpu", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def model(model_dir):
    return scmulan.SCMULAN.load(model_dir)


@pytest.fixture(scope="module")
def prepared_query(files, model) -> ad.AnnData:
    """The query prepared by the library itself: the oracle for what the commands compute."""
    query = ad.read_h5ad(files["query"])
    scmulan.pp.prepare(query, model)
    return query


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------- train
def test_train_saves_a_loadable_model(model, files):
    ref = ad.read_h5ad(files["ref"])
    assert model.is_trained_
    assert model.obs_keys_ == {
        "organ": "organ",
        "region": "region",
        **{k: k for k in ("coarse_cell_type", "cell_type")},
    }
    assert sorted(model.vocab.categories("cell_type")) == sorted(ref.obs["cell_type"].cat.categories)
    assert (model.config.n_layer, model.config.n_embd) == (2, 64)  # --config tiny
    assert len(model.history_["validation_loss"]) == 1  # --epochs 1


def test_train_without_tasks_trains_those_the_given_fields_support(files, capsys):
    out = files["root"] / "cell_types_only"
    argv = ["train", files["ref"], "-o", out, "--config", "tiny", "--epochs", "1", "--cell-type-key", "cell_type"]
    code, stdout, _ = run(capsys, *argv, "--accelerator", "cpu", "--quiet")
    assert code == 0
    assert "tasks generation, annotation ->" in stdout  # no metadata field: no metadata task
    assert scmulan.SCMULAN.load(out).is_trained_


# ---------------------------------------------------------------------------------------------- annotate / embed
def test_annotate_matches_the_library(capsys, files, model_dir, model, prepared_query, tmp_path):
    out = tmp_path / "annotated.h5ad"
    code, stdout, stderr = run(capsys, "annotate", files["query"], "-o", out, "--model", model_dir, "-q", "-v")
    assert code == 0, stderr
    assert stdout.startswith("annotated 30 cells")
    assert "computing cell-type annotation" in stderr  # -v: the package's INFO log
    result = ad.read_h5ad(out)
    assert result.uns["scmulan_prepare"]["data_kind"] == "counts"  # prepared because it was not yet
    assert "counts" in result.layers
    expected = prepared_query.copy()
    scmulan.tl.annotate(expected, model, progress=False)
    for key in ("scmulan_coarse", "scmulan_fine"):
        assert result.obs[key].astype(str).tolist() == expected.obs[key].astype(str).tolist()
    assert set(result.obs["scmulan_fine"].astype(str)) <= set(model.vocab.categories("cell_type"))
    np.testing.assert_allclose(result.obs["scmulan_confidence"], expected.obs["scmulan_confidence"], rtol=1e-5)
    np.testing.assert_allclose(result.obsm["X_scmulan"], expected.obsm["X_scmulan"], atol=1e-5)
    assert result.obsm["X_scmulan"].shape == (30, model.config.n_embd)
    assert "scmulan_prepare" not in ad.read_h5ad(files["query"]).uns  # the input file is untouched


def test_embed_mean_pooling_matches_the_library(capsys, files, model_dir, model, prepared_query, tmp_path):
    out = tmp_path / "embedded.h5ad"
    argv = ["embed", files["query"], "-o", out, "--model", model_dir, "--pooling", "mean", "--key-added", "mean"]
    code, stdout, stderr = run(capsys, *argv, "-q")
    assert code == 0, stderr
    assert "30 x 64" in stdout
    expected = prepared_query.copy()
    scmulan.tl.embed(expected, model, pooling="mean", key_added="mean", progress=False)
    np.testing.assert_allclose(ad.read_h5ad(out).obsm["X_mean"], expected.obsm["X_mean"], atol=1e-5)


def test_predict_metadata_defaults_to_the_model_fields(capsys, files, model_dir, model, tmp_path):
    out = tmp_path / "meta.h5ad"
    code, stdout, stderr = run(capsys, "predict-metadata", files["query"], "-o", out, "--model", model_dir, "-q")
    assert code == 0, stderr
    result = ad.read_h5ad(out)
    assert model.metadata_fields_  # organ and region
    for field in model.metadata_fields_:
        assert set(result.obs[f"scmulan_{field}"].astype(str)) <= set(model.vocab.categories(field))
        assert f"scmulan_{field}_confidence" in result.obs
        assert f"{field}:" in stdout


@pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")  # mudata's own notice
def test_annotate_mudata_writes_the_modality(capsys, files, model_dir, tmp_path):
    import mudata

    query = ad.read_h5ad(files["query"])
    other = ad.AnnData(np.ones((query.n_obs, 2), dtype=np.float32), obs=query.obs[[]])
    mudata.MuData({"gex": query, "adt": other}).write(tmp_path / "in.h5mu")
    out = tmp_path / "out.h5mu"
    argv = ["annotate", tmp_path / "in.h5mu", "-o", out, "--model", model_dir, "--mod", "gex", "-q"]
    code, _, stderr = run(capsys, *argv)
    assert code == 0, stderr
    result = mudata.read_h5mu(out)
    assert "scmulan_fine" in result.mod["gex"].obs
    assert "X_scmulan" in result.mod["gex"].obsm
    assert result.mod["adt"].n_vars == 2


def test_no_prepare_on_counts_is_a_data_error(capsys, files, model_dir, tmp_path):
    out = tmp_path / "x.h5ad"
    code, _, stderr = run(capsys, "annotate", files["query"], "-o", out, "--model", model_dir, "--no-prepare", "-q")
    assert code == 1
    assert stderr.startswith("error: ")
    assert "Traceback" not in stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- generate
def test_generate_with_a_condition_is_seeded(capsys, model_dir, model, tmp_path):
    category = model.vocab.categories("cell_type")[0]
    outs = [tmp_path / "gen1.h5ad", tmp_path / "gen2.h5ad"]
    for out in outs:
        argv = ["generate", "-o", out, "--model", model_dir, "--condition", f"cell_type={category}"]
        code, stdout, stderr = run(capsys, *argv, "--n-cells", "3", "--seed", "7", "--max-length", "24", "-q")
        assert code == 0, stderr
        assert stdout.startswith("generated 3 cells")
    first, second = (ad.read_h5ad(out) for out in outs)
    assert first.n_obs == 3
    assert first.n_vars == len(model.vocab.genes)
    assert (first.obs["n_genes"] <= 24).all()  # --max-length reaches the library
    assert first.obs["cell_type"].astype(str).tolist() == [category] * 3
    np.testing.assert_array_equal(first.layers["levels"].toarray(), second.layers["levels"].toarray())


def test_generate_passes_the_sampling_defaults_and_their_overrides(capsys, model_dir, model, tmp_path):
    category = model.vocab.categories("cell_type")[0]
    base = ["generate", "--model", model_dir, "--condition", f"cell_type={category}", "--n-cells", "2", "-q"]
    default, former = tmp_path / "default.h5ad", tmp_path / "former.h5ad"
    assert run(capsys, *base, "-o", default)[0] == 0
    overrides = ["--guidance", "1", "--gene-counts", "model", "--top-p", "0.9"]
    assert run(capsys, *base, *overrides, "-o", former)[0] == 0
    params = ad.read_h5ad(default).uns["scmulan_generate"]["params"]
    assert (params["guidance"], params["gene_counts"]) == (1.5, "reference")
    assert (params["level_guidance"], params["guidance_steps"], params["redraws"]) == (1.0, -1, 2)
    params = ad.read_h5ad(former).uns["scmulan_generate"]["params"]
    assert (params["guidance"], params["gene_counts"], params["top_p"]) == (1.0, "model", 0.9)
    levels = tmp_path / "levels.h5ad"
    options = ["--level-guidance", "1.75", "--guidance-steps", "20", "--redraws", "0"]
    assert run(capsys, *base, *options, "-o", levels)[0] == 0
    params = ad.read_h5ad(levels).uns["scmulan_generate"]["params"]
    assert (params["level_guidance"], params["guidance_steps"], params["redraws"]) == (1.75, 20, 0)
    assert "type_confirmed" not in ad.read_h5ad(levels).obs
    code, _, stderr = run(capsys, *base, "--gene-counts", "real", "-o", tmp_path / "bad.h5ad")
    assert code == 2
    assert "invalid choice: 'real'" in stderr


def test_generate_from_a_conditions_csv(capsys, model_dir, model, tmp_path):
    types = model.vocab.categories("cell_type")[:2]
    csv = tmp_path / "conditions.csv"
    pd.DataFrame({"cell_type": types}).to_csv(csv, index=False)
    out = tmp_path / "gen.h5ad"
    argv = [
        "generate",
        "-o",
        out,
        "--model",
        model_dir,
        "--conditions-csv",
        csv,
        "--n-cells",
        "2",
        "--max-length",
        "16",
    ]
    argv.append("-q")
    code, _, stderr = run(capsys, *argv)
    assert code == 0, stderr
    assert ad.read_h5ad(out).obs["cell_type"].astype(str).tolist() == [types[0]] * 2 + [types[1]] * 2


def test_generate_unknown_category_lists_the_valid_ones(capsys, model_dir, model, tmp_path):
    out = tmp_path / "gen.h5ad"
    argv = ["generate", "-o", out, "--model", model_dir, "--condition", "cell_type=Not a cell", "--n-cells", "3"]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 1
    assert stdout == ""
    assert stderr.startswith("error: ")
    assert "valid ones" in stderr
    assert model.vocab.categories("cell_type")[0] in stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- errors
def test_missing_input_is_a_data_error(capsys, tmp_path):
    code, _, stderr = run(capsys, "annotate", tmp_path / "nope.h5ad", "-o", tmp_path / "o.h5ad", "--model", "x")
    assert code == 1
    assert stderr == f"error: input file {str(tmp_path / 'nope.h5ad')!r} does not exist.\n"
    code, _, stderr = run(capsys, "annotate", tmp_path / "nope.h5ad", "-o", tmp_path / "o.h5ad", "--model", "x", "-vv")
    assert code == 1
    assert "Traceback" in stderr  # -vv shows where it came from


def test_existing_output_is_refused(capsys, files, tmp_path):
    out = tmp_path / "taken.h5ad"
    out.write_bytes(b"keep me")
    code, _, stderr = run(capsys, "embed", files["query"], "-o", out, "--model", "scmulan-v1")
    assert code == 1
    assert "--overwrite" in stderr
    assert out.read_bytes() == b"keep me"
    model_out = tmp_path / "model"
    model_out.mkdir()
    (model_out / "something").write_text("x")
    code, _, stderr = run(capsys, "train", files["ref"], "-o", model_out, "--cell-type-key", "cell_type")
    assert code == 1
    assert "already exists" in stderr


def test_unknown_model_is_a_data_error(capsys, files, tmp_path):
    code, _, stderr = run(capsys, "annotate", files["query"], "-o", tmp_path / "o.h5ad", "--model", "no-such-model")
    assert code == 1
    assert "scmulan-v1" in stderr  # the known pretrained names
    shutil.copy(files["ref"], tmp_path / "ckpt.pt")  # an "original checkpoint" without its meta_info.pt
    code, _, stderr = run(
        capsys, "annotate", files["query"], "-o", tmp_path / "o.h5ad", "--model", tmp_path / "ckpt.pt"
    )
    assert code == 1
    assert "--meta-info" in stderr


def test_unsafe_vocabulary_file_is_a_data_error(capsys, files, tmp_path):
    import torch

    from scmulan.hub import LEGACY_KEY_MAP, config_from_model_args
    from scmulan.nn import CSentenceTransformer

    model_args = {"block_size": 64, "vocab_size": 20, "n_layer": 1, "n_head": 2, "n_embd": 8, "bias": False}
    model_args |= {"dropout": 0.0, "expression_level": 10, "ele": 1}
    net = CSentenceTransformer(config_from_model_args(model_args))
    legacy_name = {dst.replace("{i}", "0"): src.replace("{i}", "0") for src, dst in LEGACY_KEY_MAP.items()}
    state = {legacy_name[key]: tensor for key, tensor in net.state_dict().items()}
    torch.save({"model": state, "model_args": model_args}, tmp_path / "ckpt.pt")
    torch.save({"token_set": torch.zeros(3)}, tmp_path / "meta_info.pt")  # a tensor: refused, never unpickled
    argv = ["annotate", files["query"], "-o", tmp_path / "o.h5ad", "--model", tmp_path / "ckpt.pt"]
    code, _, stderr = run(capsys, *argv, "--meta-info", tmp_path / "meta_info.pt")
    assert code == 1
    assert stderr.startswith(f"error: {tmp_path / 'meta_info.pt'} cannot be read")  # one line naming the file
    assert "meta_info file references torch._utils." in stderr
    assert stderr.endswith("only plain Python containers are allowed in a vocabulary file.\n")
    assert stderr.count("\n") == 1
    assert not (tmp_path / "o.h5ad").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["annotate", "in.h5ad", "--model", "m"],  # no -o
        ["annotate", "in.h5ad", "-o", "o.h5ad", "--model", "m", "--batch-size", "0"],
        ["embed", "in.h5ad", "-o", "o.h5ad", "--model", "m", "--pooling", "max"],
        ["generate", "-o", "o.h5ad", "--model", "m", "--condition", "organ"],
        ["generate", "-o", "o.h5ad", "--model", "m", "--gene-prompt", "GJA5=11"],
        ["generate", "-o", "o.h5ad", "--model", "m", "--condition", "organ=Heart", "--conditions-csv", "c.csv"],
        ["train", "in.h5ad", "-o", "m", "--tasks", "dancing"],
        ["train", "in.h5ad", "-o", "m", "--epochs", "0"],
        ["train", "in.h5ad", "-o", "m", "--epochs", "many"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_are_usage_errors(capsys, argv):
    code, _, stderr = run(capsys, *argv)
    assert code == 2
    assert "usage: scmulan" in stderr


# ---------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", ["annotate", "embed", "predict-metadata", "generate", "train"])
def test_every_command_has_help_with_examples(capsys, command):
    code, stdout, _ = run(capsys, command, "--help")
    assert code == 0
    assert f"usage: scmulan {command}" in stdout
    assert f"scmulan {command} " in stdout.split("examples:")[1]


def test_version_and_python_m(capsys, monkeypatch):
    code, stdout, _ = run(capsys, "--version")
    assert code == 0
    assert stdout.strip() == f"scmulan {scmulan.__version__}"
    monkeypatch.setattr(sys, "argv", ["scmulan", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("scmulan", run_name="__main__")
    assert exit_info.value.code == 0


def test_console_script_help_does_not_import_torch():
    script = Path(sys.executable).with_name("scmulan")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scmulan"]
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "annotate" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "scmulan.cli" in imported
    heavy = {name for name in imported if name.split(".")[0] in {"torch", "scvi", "lightning"}}
    assert not heavy


# ---------------------------------------------------------------------------------------------- legacy
def test_original_checkpoint_reproduces_the_original(capsys, legacy_dir, tmp_path):
    out = tmp_path / "legacy.h5ad"
    argv = ["annotate", legacy_dir / "prepared_input_2000.h5ad", "-o", out, "--model", legacy_dir / "tiny_ckpt.pt"]
    code, _, stderr = run(capsys, *argv, "--meta-info", legacy_dir / "meta_info.pt", "--legacy", "-q")
    assert code == 0, stderr
    result = ad.read_h5ad(out)
    expected_obs = pd.read_csv(legacy_dir / "expected_obs.csv", index_col=0)
    expected = np.load(legacy_dir / "expected.npz", allow_pickle=False)
    assert list(result.obs_names) == list(expected["obs_names"])
    assert result.obs["scmulan_fine"].astype(str).tolist() == expected_obs["cell_type_from_scMulan"].tolist()
    np.testing.assert_allclose(result.obsm["X_scmulan"], expected["X_scMulan"], atol=1e-5)


def test_train_epochs_default_to_auto_and_take_a_number():
    from scmulan.cli._main import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "in.h5ad", "-o", "m"]).epochs == "auto"
    assert parser.parse_args(["train", "in.h5ad", "-o", "m", "--epochs", "auto"]).epochs == "auto"
    assert parser.parse_args(["train", "in.h5ad", "-o", "m", "--epochs", "7"]).epochs == 7
