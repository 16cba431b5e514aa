"""benchmarks/matmul_shapes.py runs at toy sizes and reports each product as a fraction of the square peak."""

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
            ["--widths", "8", "--rows", "16", "--seconds", "0.01", "--peak-seconds", "0.05", "--out", str(out)]
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
