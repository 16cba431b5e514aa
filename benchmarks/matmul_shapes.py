"""How close the presets' own matrix shapes come to the matmul peak: is a narrow network's CPU inference GEMM-bound?

The annotation throughput benchmark divides useful FLOPs by the FLOP/s of a big square matmul. A narrow network
(``tiny``: width 64) reaches a smaller fraction of that peak than a wide one. This script asks whether its linear
layers could do better at all: it times ``(rows x d) @ (d x 3d)`` (attention in-projection), ``(d x d)`` (its
out-projection), ``(d x 4d)`` and ``(4d x d)`` (the MLP) at the widths and row counts given, each the best of timed
loops of 10 products (:func:`annotation_throughput.matmul_rate`), and reports each as a fraction of the square peak measured in the same process
(:func:`annotation_throughput.matmul_peak`), plus the FLOP-weighted fraction of a block's four products.

The second table times the other matrix work of a layer, causal attention (``scaled_dot_product_attention`` with
``is_causal=True``, what the prompt pass runs) over ``(B, d / head_width, L, head_width)``, with ``B`` the cells of
``L`` tokens that fill the CPU decoding batch (:func:`scmulan.model._inference.decoding_token_budget`), and counts
its useful FLOPs as annotation_throughput does (``2 d L^2`` per cell: QK^T and AV over the lower triangle). Its
*ceiling* column combines both: a layer's useful FLOPs over the time of its linear products and its attention at
the rates measured, the fraction of the peak that layer would reach if everything else (LayerNorm, GELU, residual
additions, heads, decoding steps) cost nothing.

    python benchmarks/matmul_shapes.py                                  # widths 64 and 128, one thread
    python benchmarks/matmul_shapes.py --widths 64 --rows 256 2048 --lengths 64 622 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _compare import markdown_table, setup_runtime, write_report
from annotation_throughput import matmul_peak, matmul_rate

from scmulan.model._inference import decoding_token_budget

PRODUCTS = {"qkv": (1, 3), "attn_out": (1, 1), "mlp_in": (1, 4), "mlp_out": (4, 1)}  # (k, n) in units of d


def product_rates(d: int, rows: int, seconds: float) -> dict[str, float]:
    """FLOP/s of each of a block's four linear products over ``rows`` tokens at width ``d``."""
    cpu = torch.device("cpu")
    return {
        name: matmul_rate(torch.randn(rows, k * d), torch.randn(k * d, n * d), cpu, seconds)
        for name, (k, n) in PRODUCTS.items()
    }


def block_rate(d: int, rates: dict[str, float]) -> float:
    """FLOP-weighted rate of a block's four products from their single rates (all at the same row count)."""
    flops = {name: k * n * d * d for name, (k, n) in PRODUCTS.items()}
    return sum(flops.values()) / sum(flops[name] / rates[name] for name in PRODUCTS)


def attention_rate(d: int, head_width: int, length: int, cells: int, seconds: float) -> float:
    """Useful FLOP/s (``2 d L^2`` per cell) of causal SDPA over ``cells`` sentences of ``length`` tokens."""
    q, k, v = (torch.randn(cells, d // head_width, length, head_width) for _ in range(3))
    for _ in range(2):
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
        best = min(best, time.perf_counter() - t0)
    return 2 * d * length * length * cells / best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128], help="network widths d (default: 64 128)")
    p.add_argument("--rows", type=int, nargs="+", default=[256, 2048, 8192], help="token rows per product")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 622], help="sentence lengths L for attention")
    p.add_argument("--head-width", type=int, default=32, help="attention head width (tiny, small: 32)")
    p.add_argument("--seconds", type=float, default=0.7, help="timing budget per product (default: 0.7)")
    p.add_argument("--peak-seconds", type=float, default=3.0, help="timing budget of the square peak (default: 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/matmul_shapes.json)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    setup_runtime(args.threads)
    peak = matmul_peak(torch.device("cpu"), "fp32", seconds=args.peak_seconds)
    runs, rows = [], []
    for d in args.widths:
        for m in args.rows:
            rates = product_rates(d, m, args.seconds)
            block = block_rate(d, rates)
            runs.append(
                {"width": d, "rows": m, "fraction": {n: r / peak for n, r in rates.items()}, "block": block / peak}
            )
            rows.append([str(d), str(m), *(f"{rates[n] / peak:.2f}" for n in PRODUCTS), f"{block / peak:.2f}"])
    table = markdown_table(["d", "rows", *PRODUCTS, "block (FLOP-weighted)"], rows)
    attention, attention_rows = [], []
    for d in args.widths:
        for length in args.lengths:
            cells = max(1, decoding_token_budget("cpu", d) // length)
            attn = attention_rate(d, args.head_width, length, cells, args.seconds)
            linear = block_rate(d, product_rates(d, cells * length, args.seconds))
            linear_flops, attn_flops = 24 * d * d * length, 2 * d * length * length  # per cell and layer
            ceiling = (linear_flops + attn_flops) / (linear_flops / linear + attn_flops / attn)
            share = attn_flops / (linear_flops + attn_flops)
            attention.append(
                {
                    "width": d,
                    "head_width": args.head_width,
                    "length": length,
                    "cells": cells,
                    "attention_fraction": attn / peak,
                    "linear_fraction": linear / peak,
                    "attention_flop_share": share,
                    "ceiling": ceiling / peak,
                }
            )
            attention_rows.append(
                [
                    str(d),
                    str(length),
                    str(cells),
                    f"{share:.2f}",
                    f"{attn / peak:.2f}",
                    f"{linear / peak:.2f}",
                    f"{ceiling / peak:.2f}",
                ]
            )
    attention_table = markdown_table(
        ["d", "L", "cells", "attention share of FLOPs", "attention", "linear products", "ceiling"], attention_rows
    )
    print(f"square 1024^3 fp32 peak: {peak / 1e9:.1f} GFLOP/s, {args.threads} thread(s)\n{table}\n\n{attention_table}")
    results = {
        "peak_flops": peak,
        "runs": runs,
        "table_markdown": table,
        "attention": attention,
        "attention_table_markdown": attention_table,
    }
    write_report("matmul_shapes", args, results, started, args.out)


if __name__ == "__main__":
    main()
