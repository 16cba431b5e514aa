"""The prepared GPU check: one command that measures scmulan at scMulan-v1 size on one GPU and writes JSON + Markdown.

Sections (random weights at the released size, 2,222 entities; synthetic cells of the released 2,000 genes, whose
prompts are ~500-700 tokens like the original's training cells; nothing is downloaded):

(a) legacy parity: annotation in bf16 autocast against fp32 (label agreement, embedding cosine), and the legacy
    mode (fp32) against the original's batch-1 algorithm (label agreement, which must be 1);
(b) annotation + embedding cells/s in bf16, against the original's batch-1 algorithm (``run_baseline`` of
    ``annotation_throughput.py``: full recompute per step) on a few cells, with % of the measured bf16 matmul peak;
(c) generation cells/s (unconditional, ``--gen-tokens`` new genes per cell);
(d) pre-training tokens/s and MFU, packed against padded, in the same process (``training_throughput.run``);
(e) peak GPU memory of every section (``torch.cuda.max_memory_allocated``; peak RSS on CPU).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json      # one H100: about 5 minutes
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.json           # tiny size on the CPU, < 1 minute

The JSON carries ``annotation_cells_per_s``, ``generation_cells_per_s``, ``train_tokens_per_s``, ``mfu``,
``real_token_fraction`` and ``peak_memory_bytes`` at the top level (the packed path's training figures) and every
figure per section; the Markdown table goes next to it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import annotation_throughput as at
import training_throughput as tt


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # process peak RSS (Linux: KiB)


def _timed(device, fn):
    _peak_reset(device)
    at._sync(device)
    t = time.perf_counter()
    out = fn()
    at._sync(device)
    return out, time.perf_counter() - t, _peak(device)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(num / np.maximum(den, 1e-12)))


def check(args) -> dict:
    """Run every section; return the report."""
    import torch

    device = torch.device(args.device)
    workdir = Path(tempfile.mkdtemp(prefix="scmulan_gpu_check_"))
    inputs_args = SimpleNamespace(meta_info=None, seed=0, n_cells=args.cells, density=1.0)
    inputs = at.build_inputs(inputs_args, args.preset, workdir)
    model, adata = at.load(inputs, inputs_args, args.cells)
    lengths = np.asarray((adata.X > 0).sum(1)).ravel() + 1  # genes + the task token
    bf16 = "bf16" if device.type == "cuda" else "fp32"  # CPU autocast is off in the package: the smoke run is fp32
    annotate = lambda legacy: model.annotate(
        adata, legacy=legacy, batch_size=args.batch_size, device=device, return_embedding=True, progress=False
    )
    annotate(False)  # warm-up (kernels, allocator)
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    report["preset"], report["cells"] = args.preset, args.cells
    report["mean_prompt_tokens"] = float(lengths.mean())

    # (a) parity: bf16 against fp32, and the legacy mode against the original's algorithm
    with at.precision(device, "fp32"):
        (fp32_labels, fp32_emb), _, _ = _timed(device, lambda: annotate(False))
    (labels, emb), seconds, peak_annotation = _timed(device, lambda: annotate(False))
    few = min(args.baseline_cells, args.cells)
    prompts = at.baseline_prompts(model, adata[:few])
    (base_labels, _), base_seconds, _ = _timed(device, lambda: at.run_baseline(model, prompts, device, "fp32"))
    legacy_labels = model.annotate(adata[:few], legacy=True, device=device, progress=False)
    report["parity"] = {
        "bf16_vs_fp32_label_agreement": float((labels["fine"].to_numpy() == fp32_labels["fine"].to_numpy()).mean()),
        "bf16_vs_fp32_min_embedding_cosine": _cosine(np.asarray(emb), np.asarray(fp32_emb)),
        "legacy_vs_original_label_agreement": float(
            (legacy_labels["fine"].astype(str).to_numpy() == base_labels.astype(str)).mean()
        ),
        "precision": bf16,
    }

    # (b) annotation throughput against the original's batch-1 algorithm in the same precision
    (_, _), base_seconds, _ = _timed(device, lambda: at.run_baseline(model, prompts, device, bf16))
    peak_flops = at.matmul_peak(device, bf16, seconds=1.0 if args.smoke else 2.0)
    cells_per_s = args.cells / seconds
    base_per_s = few / base_seconds
    report["annotation"] = {
        "annotation_cells_per_s": cells_per_s,
        "original_batch1_cells_per_s": base_per_s,
        "speedup_vs_original": cells_per_s / base_per_s,
        "fraction_of_peak": at.model_flops(model.module.config, lengths, max(2, len(model.annotation_fields)))
        / seconds
        / peak_flops,
        "measured_peak_tflops": peak_flops / 1e12,
        "peak_memory_bytes": peak_annotation,
    }

    # (c) generation
    n_gen = args.gen_cells
    model.generate(n_cells=min(8, n_gen), max_length=16, device=device, progress=False)  # warm-up
    _, gen_seconds, peak_generation = _timed(
        device,
        lambda: model.generate(
            n_cells=n_gen, max_length=args.gen_tokens, batch_size=args.batch_size, device=device, progress=False
        ),
    )
    report["generation"] = {
        "generation_cells_per_s": n_gen / gen_seconds,
        "max_new_tokens": args.gen_tokens,
        "peak_memory_bytes": peak_generation,
    }

    # (d) pre-training, packed against padded (same batches, same process)
    _peak_reset(device)
    rows = tt.run(
        args.preset,
        args.train_steps,
        args.train_batch_size,
        str(device),
        bf16,
        args.train_cells,
        None if args.preset == "scmulan-v1" else 500,
        "atlas",
        "both",
    )
    peak_training = _peak(device)
    training = {r["path"]: r for r in rows}
    report["training"] = {
        path: {k: r[k] for k in ("tokens_per_s", "mfu", "real_token_fraction", "seconds_per_step")}
        for path, r in training.items()
    }
    report["training"]["packed_speedup_vs_padded"] = training["packed"]["speedup_vs_padded"]
    report["training"]["peak_memory_bytes"] = peak_training

    # (e) peak memory, and the top-level keys that compare across machines
    report["peak_memory_bytes"] = {
        "annotation": peak_annotation,
        "generation": peak_generation,
        "training": peak_training,
        "max": max(peak_annotation, peak_generation, peak_training),
    }
    report["annotation_cells_per_s"] = cells_per_s
    report["generation_cells_per_s"] = n_gen / gen_seconds
    report["train_tokens_per_s"] = training["packed"]["tokens_per_s"]
    report["mfu"] = training["packed"]["mfu"]
    report["real_token_fraction"] = training["packed"]["real_token_fraction"]
    return report


def markdown(report: dict) -> str:
    """The report as a Markdown table."""
    p, a, g, t = report["parity"], report["annotation"], report["generation"], report["training"]
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    rows = [
        ("(a) labels bf16 vs fp32", f"{p['bf16_vs_fp32_label_agreement']:.1%}", "≥ 99 %"),
        ("(a) min embedding cosine bf16 vs fp32", f"{p['bf16_vs_fp32_min_embedding_cosine']:.5f}", "≥ 0.999"),
        ("(a) legacy labels vs the original algorithm", f"{p['legacy_vs_original_label_agreement']:.1%}", "100 %"),
        ("(b) annotation + embedding, cells/s", f"{a['annotation_cells_per_s']:.1f}", "≥ 700"),
        ("(b) the original's batch-1 algorithm, cells/s", f"{a['original_batch1_cells_per_s']:.1f}", ""),
        ("(b) speed-up vs the original", f"{a['speedup_vs_original']:.1f}×", "≥ 35×"),
        ("(b) % of the measured matmul peak", f"{a['fraction_of_peak']:.1%}", ""),
        (f"(c) generation ({g['max_new_tokens']} new tokens), cells/s", f"{g['generation_cells_per_s']:.1f}", "≥ 200"),
        ("(d) training tokens/s, padded", f"{t['padded']['tokens_per_s']:,.0f}", ""),
        ("(d) training tokens/s, packed", f"{t['packed']['tokens_per_s']:,.0f}", ""),
        ("(d) packed / padded", f"{t['packed_speedup_vs_padded']:.2f}×", ""),
        ("(d) MFU padded / packed", f"{t['padded']['mfu']:.1%} / {t['packed']['mfu']:.1%}", "≥ 50 %"),
        (
            "(d) real-token fraction padded / packed",
            f"{t['padded']['real_token_fraction']:.1%} / {t['packed']['real_token_fraction']:.1%}",
            "≥ 95 %",
        ),
    ]
    rows += [(f"(e) peak memory, {k}", gib(v), "") for k, v in report["peak_memory_bytes"].items() if k != "max"]
    head = (
        f"{report['device']}, {report['preset']}, {report['cells']} cells, "
        f"{report['mean_prompt_tokens']:.0f}-token prompts on average, {p['precision']}\n\n"
    )
    lines = ["| check | measured | target |", "|---|---:|---:|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Parse the arguments, run the check, write ``--out`` (JSON) and its ``.md`` table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON report path; the Markdown table goes next to it (.md)")
    parser.add_argument("--smoke", action="store_true", help="tiny size on the CPU in under a minute (tests)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--preset", default=None, help="default: scmulan-v1 (tiny with --smoke)")
    parser.add_argument("--cells", type=int, default=None, help="annotated cells (default 2000; 24 with --smoke)")
    parser.add_argument("--baseline-cells", type=int, default=None, help="cells for the original's batch-1 loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gen-cells", type=int, default=None)
    parser.add_argument("--gen-tokens", type=int, default=None, help="new genes per generated cell (default 600)")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--train-cells", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    smoke = args.smoke
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    defaults = {
        "preset": ("tiny", "scmulan-v1"),
        "cells": (24, 2000),
        "baseline_cells": (4, 40),
        "gen_cells": (8, 512),
        "gen_tokens": (16, 600),
        "train_steps": (2, 20),
        "train_cells": (64, 1000),
    }
    for key, (small, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if smoke else full)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    report = check(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"written {out} and {out.with_suffix('.md')}")
    return report


if __name__ == "__main__":
    main()
