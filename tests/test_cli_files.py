"""The command line's file errors (one line naming the file, exit 1) and its hints in its own terms (options)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

import scmulan
from scmulan.cli import main
from scmulan.cli._hints import option_table, render_hints

N_GENES = 100


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny saved (untrained) model, raw-count query cells, and the same cells under other gene names."""
    import torch

    root = tmp_path_factory.mktemp("cli_files")
    atlas = scmulan.datasets.synthetic_atlas(
        n_cells=40, n_genes=N_GENES, n_coarse_types=3, n_fine_per_coarse=2, n_coarse_markers=8, n_fine_markers=4
    )
    query = atlas.copy()
    query.obs = query.obs[[]]
    scmulan.pp.prepare(atlas)
    scmulan.SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    scmulan.SCMULAN(atlas, config="tiny").save(root / "model")
    torch.set_num_threads(previous)
    paths = {"root": root, "model": root / "model", "query": root / "query.h5ad"}
    query.write_h5ad(paths["query"])
    renamed = query.copy()  # every gene under an alias: nothing matches without the alias table
    renamed.var_names = [f"ALIAS{i}" for i in range(renamed.n_vars)]
    renamed.write_h5ad(root / "renamed.h5ad")
    (root / "aliases.csv").write_text(
        "alias,symbol\n" + "".join(f"ALIAS{i},{g}\n" for i, g in enumerate(query.var_names))
    )
    partial = query.copy()  # 70 of the 100 model genes
    partial.var_names = [g if i < 70 else f"OTHER{i}" for i, g in enumerate(query.var_names)]
    partial.write_h5ad(root / "partial.h5ad")
    paths |= {"renamed": root / "renamed.h5ad", "aliases": root / "aliases.csv", "partial": root / "partial.h5ad"}
    return paths


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(stderr: str, starts: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"error: {starts}"), errors[0]
    assert "Traceback" not in stderr
    assert "weights_only" not in stderr


# ---------------------------------------------------------------------------------------------- hints
def test_the_no_overlap_error_names_cli_options_and_the_python_error_keywords(capsys, files, tmp_path):
    out = tmp_path / "o.h5ad"
    code, _, stderr = run(capsys, "embed", files["renamed"], "-o", out, "--model", files["model"], "-q")
    assert code == 1
    error = next(line for line in stderr.splitlines() if line.startswith("error:"))
    for option in ("--gene-symbols", "--aliases", "--min-overlap"):
        assert option in error
    assert "gene_symbols=" not in error
    assert "`min_overlap" not in error
    assert not out.exists()
    # the same data through the Python API: Python keywords
    import anndata as ad

    with pytest.raises(ValueError, match="min_overlap") as info:
        scmulan.pp.prepare(ad.read_h5ad(files["renamed"]), scmulan.SCMULAN.load(files["model"]))
    assert "gene_symbols=" in str(info.value)
    assert "--gene-symbols" not in str(info.value)


def test_aliases_option_maps_the_genes(capsys, files, tmp_path):
    out = tmp_path / "o.h5ad"
    argv = ["embed", files["renamed"], "-o", out, "--model", files["model"], "-q", "--aliases", files["aliases"]]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 0, stderr
    assert "embedded 40 cells" in stdout
    import anndata as ad

    written = ad.read_h5ad(out)
    assert written.uns["scmulan_prepare"]["n_overlap"] == N_GENES


def test_min_overlap_option(capsys, files, tmp_path):
    out = tmp_path / "o.h5ad"
    argv = ["embed", files["partial"], "-o", out, "--model", files["model"], "-q", "--overwrite"]
    code, _, stderr = run(capsys, *argv, "--min-overlap", "0.9")
    assert code == 1
    assert "below --min-overlap 0.9" in stderr
    code, _, stderr = run(capsys, *argv)  # the default (0.05) accepts 70 %
    assert code == 0, stderr
    code, _, stderr = run(capsys, *argv, "--min-overlap", "1.5")
    assert code == 2
    assert "expected a fraction between 0 and 1" in stderr


def test_render_hints_uses_the_commands_own_options():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gene-symbols")
    parser.add_argument("--min-overlap", type=float)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--use-metadata", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--fields", nargs="+")
    parser.add_argument("--epochs", type=int)
    options = option_table(parser)
    cases = {
        "pass `gene_symbols='symbol'`.": "pass --gene-symbols symbol.",
        "`gene_symbols=` or `aliases=` may help; lower `min_overlap`": (
            "--gene-symbols or `aliases=` may help; lower --min-overlap"  # no --aliases here: left as it is
        ),
        "below `min_overlap=0.05`": "below --min-overlap 0.05",
        "pass `overwrite=True`": "pass --overwrite",
        "or `use_metadata=False`": "or --no-use-metadata",
        "`fields=['organ', 'region']`": "--fields organ region",
        "raise `max_epochs`": "raise --epochs",
        "`adata.obs['x']` and `scmulan.pp.prepare(adata, model)`": "`adata.obs['x']` and `scmulan.pp.prepare(adata, model)`",
    }
    for text, expected in cases.items():
        assert render_hints(text, options) == expected


# ---------------------------------------------------------------------------------------------- damaged files
def test_a_damaged_model_directory_is_one_error_line(capsys, files, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(files["model"], broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    argv = ["annotate", files["query"], "-o", tmp_path / "o.h5ad", "--model", broken, "-q"]
    code, _, stderr = run(capsys, *argv)
    assert code == 1
    _one_error_line(stderr, f"{weights} is truncated (")
    weights.write_bytes(data)
    vocab = broken / "vocab.json"
    vocab.write_text(vocab.read_text()[:50])
    code, _, stderr = run(capsys, *argv)
    assert code == 1
    _one_error_line(stderr, f"{vocab} ends early (line 1, column")
    meta = broken / "model.json"
    meta.write_text("{not json")
    code, _, stderr = run(capsys, *argv)
    _one_error_line(stderr, f"{meta} is not valid JSON (line 1, column 2")
    assert not (tmp_path / "o.h5ad").exists()


def test_a_damaged_original_checkpoint_is_one_error_line(capsys, files, tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"\x80\x02 not really a checkpoint")
    (tmp_path / "meta_info.pt").write_text(json.dumps({"token_set": ["<E>"]}))
    argv = ["annotate", files["query"], "-o", tmp_path / "o.h5ad", "--model", tmp_path / "ckpt.pt", "-q"]
    code, _, stderr = run(capsys, *argv)
    assert code == 1
    _one_error_line(stderr, f"{tmp_path / 'ckpt.pt'} ")
    assert "Download the checkpoint" in stderr


def test_a_truncated_input_or_shard_is_one_error_line(capsys, files, tmp_path):
    data = files["query"].read_bytes()
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(data[: len(data) // 2])
    code, _, stderr = run(capsys, "embed", cut, "-o", tmp_path / "o.h5ad", "--model", files["model"], "-q")
    assert code == 1
    _one_error_line(stderr, f"{cut} is truncated (")
    empty = tmp_path / "empty.h5ad"
    empty.write_bytes(b"")
    argv = ["train", files["query"], "-o", tmp_path / "m", "--cell-type-key", "cell_type", "--corpus", files["query"]]
    code, _, stderr = run(capsys, *argv, empty, "-q")
    assert code == 1
    _one_error_line(stderr, f"{empty} is empty")
    assert not (tmp_path / "m").exists()
