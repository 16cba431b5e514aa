"""benchmarks/matmul_shapes.py runs at toy sizes and reports each product, and attention, as a fraction of the peak."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_shape_benchmark_writes_a_fraction_per_product(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its siblings (_compare, annotation_throughput)
    monkeypatch.delitem(sys.modules, "matmul_shapes", raising=False)
    import matmul_shapes

    monkeypatch.setenv("PYTHONWARNINGS", "ignore")  # the script's runtime setup sets it; restored afterwards
    out = tmp_path / "shapes.json"
    threads = torch.get_num_threads()
    try:
        matmul_shapes.main(
            ["--widths", "8", "--rows", "16", "--lengths", "5", "--head-width", "4", "--seconds", "0.01"]
            + ["--peak-seconds", "0.05", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    results = json.loads(out.read_text())["results"]
    assert results["peak_flops"] > 0
    (run,) = results["runs"]
    assert (run["width"], run["rows"]) == (8, 16)
    assert set(run["fraction"]) == {"qkv", "attn_out", "mlp_in", "mlp_out"}
    assert all(f > 0 for f in run["fraction"].values())
    assert min(run["fraction"].values()) <= run["block"] <= max(run["fraction"].values())
    assert "| 8 | 16 |" in results["table_markdown"]
    (attention,) = results["attention"]
    assert (attention["width"], attention["head_width"], attention["length"]) == (8, 4, 5)
    assert attention["cells"] >= 1
    assert attention["attention_fraction"] > 0
    assert attention["linear_fraction"] > 0
    assert 0 < attention["attention_flop_share"] < 1
    # the ceiling is a FLOP-weighted harmonic mean of the two rates: between them
    low, high = sorted((attention["attention_fraction"], attention["linear_fraction"]))
    assert low * (1 - 1e-9) <= attention["ceiling"] <= high * (1 + 1e-9)
    assert "| 8 | 5 |" in results["attention_table_markdown"]
