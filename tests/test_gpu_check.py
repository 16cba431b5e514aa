"""The prepared GPU check runs end to end at tiny size on the CPU (``--smoke``) and writes its JSON and table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
KEYS = (
    "annotation_cells_per_s",
    "generation_cells_per_s",
    "train_tokens_per_s",
    "mfu",
    "real_token_fraction",
    "peak_memory_bytes",
)


@pytest.mark.filterwarnings("ignore")
def test_smoke_run_writes_every_key(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "check.json"
    gpu_check.main(["--smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    for key in KEYS:
        assert key in report
    assert report["annotation_cells_per_s"] > 0
    assert report["generation_cells_per_s"] > 0
    assert report["train_tokens_per_s"] > 0
    assert 0 < report["mfu"] < 1
    assert 0.9 <= report["real_token_fraction"] <= 1
    assert report["training"]["packed"]["real_token_fraction"] >= report["training"]["padded"]["real_token_fraction"]
    parity = report["parity"]
    assert parity["legacy_vs_original_label_agreement"] == 1.0  # the legacy mode is the original algorithm
    assert parity["bf16_vs_fp32_label_agreement"] == 1.0  # on the CPU both are fp32
    table = out.with_suffix(".md").read_text()
    for section in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert section in table
