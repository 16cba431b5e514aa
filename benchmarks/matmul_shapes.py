"""How close the presets' own matrix shapes come to the matmul peak: is a narrow network's CPU inference GEMM-bound?

The annotation throughput benchmark divides useful FLOPs by the FLOP/s of a big square matmul. A narrow network
(``tiny``: width 64) reaches a smaller fraction of that peak than a wide one. This script asks whether its linear
layers could do better at all: it times ``(rows x d) @ (d x 3d)`` (attention in-projection), ``(d x d)`` (its
out-projection), ``(d x 4d)`` and ``(4d x d)`` (the MLP) at the widths and row counts given, each the best of timed
loops of 10 products (:func:`annotation_throughput.matmul_rate`), and reports each as a fraction of the square peak measured in the same process
(:func:`annotation_throughput.matmul_peak`), plus the FLOP-weighted fraction of a block's four products.

    python benchmarks/matmul_shapes.py                                  # widths 64 and 128, one thread
    python benchmarks/matmul_shapes.py --widths 64 --rows 256 2048 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
from _compare import markdown_table, setup_runtime, write_report
from annotation_throughput import matmul_peak, matmul_rate

PRODUCTS = {"qkv": (1, 3), "attn_out": (1, 1), "mlp_in": (1, 4), "mlp_out": (4, 1)}  # (k, n) in units of d


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128], help="network widths d (default: 64 128)")
    p.add_argument("--rows", type=int, nargs="+", default=[256, 2048, 8192], help="token rows per product")
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
            shapes = {name: (m, k * d, n * d) for name, (k, n) in PRODUCTS.items()}
            cpu = torch.device("cpu")
            rates = {
                name: matmul_rate(torch.randn(m, k), torch.randn(k, n), cpu, args.seconds)
                for name, (m, k, n) in shapes.items()
            }
            flops = {name: 2 * m * k * n for name, (m, k, n) in shapes.items()}
            block = sum(flops.values()) / sum(flops[name] / rates[name] for name in shapes)
            runs.append(
                {"width": d, "rows": m, "fraction": {n: r / peak for n, r in rates.items()}, "block": block / peak}
            )
            rows.append([str(d), str(m), *(f"{rates[n] / peak:.2f}" for n in PRODUCTS), f"{block / peak:.2f}"])
    table = markdown_table(["d", "rows", *PRODUCTS, "block (FLOP-weighted)"], rows)
    print(f"square 1024^3 fp32 peak: {peak / 1e9:.1f} GFLOP/s, {args.threads} thread(s)\n{table}")
    results = {"peak_flops": peak, "runs": runs, "table_markdown": table}
    write_report("matmul_shapes", args, results, started, args.out)


if __name__ == "__main__":
    main()
