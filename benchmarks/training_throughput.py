"""Training throughput: tokens/s of the multitask training step, and model-FLOPs utilisation (MFU).

The step is the training plan's: forward over right-padded sentences, both heads at every position, the set
objective, backward, the plan's gradient clipping with its finiteness check (scmulan.train.clip_grad_norm, which
syncs with the device once per step) and AdamW (fused on CUDA, as the plan builds it). Real tokens (not padding)
are counted. MFU follows nanoGPT's estimate (6 x non-embedding parameters + attention per token, forward and
backward) against a matmul peak measured in the same process (fp32 on CPU; bf16 on CUDA).

The data are a synthetic atlas: 500 genes by default, 2,000 for the scmulan-v1 preset, whose network is built at
the released vocabulary size (2,222 entities: 2,000 genes plus metadata, task and reserved tokens; the atlas has
fewer metadata categories, and the remaining rows are entities no sentence uses, which cost the same in the heads).
A synthetic cell expresses a quarter to a third of the genes, so scmulan-v1 sentences are 500-700 tokens long,
like those of the original's training cells (a few hundred expressed genes of its 2,000, at most 1,550 tokens).

Every run times the padded and the packed path (``--packing both``, the default) on the same batches in the same
process, alternating, and reports the fraction of computed positions that are real tokens for each. ``--data
pbmc`` trains on ``scmulan.datasets.pbmc68k()`` (765 genes, ~200-token sentences) instead of the synthetic atlas.

    python benchmarks/training_throughput.py                                  # tiny and small on this CPU
    python benchmarks/training_throughput.py --data pbmc --preset tiny --steps 10 --threads 1

``--estimate`` only does arithmetic (nothing runs): the tokens, FLOPs and GPU-hours of pre-training the released
scMulan-v1 network on a corpus, at given MFUs and a given peak (defaults: the original's "equivalent of 100 million
cells", i.e. ten passes over its 10M-cell corpus; 540 and 700 tokens per cell; H100 SXM dense bf16 peak 989 TFLOP/s):

    python benchmarks/training_throughput.py --estimate
    python benchmarks/training_throughput.py --preset scmulan-v1 --device cuda --precision bf16 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def matmul_peak(device, dtype, n: int = 2048, repeats: int = 10) -> float:
    """Measured dense matmul throughput in FLOP/s."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def flops_per_token(config, mean_length: float) -> float:
    """Training FLOPs per token (forward + backward), nanoGPT's estimate with both heads counted."""
    d, L = config.n_embd, config.n_layer
    non_embedding = 12 * L * d * d + 2 * config.vocab_size * d  # blocks + entity and value heads
    return 6 * non_embedding + 12 * L * d * mean_length


# The released scmulan-v1: 2,000 genes, 2,222 entities.
RELEASED = {"scmulan-v1": {"genes": 2000, "vocab_size": 2222}}


def run(
    preset: str,
    steps: int,
    batch_size: int,
    device: str,
    precision: str,
    n_cells: int,
    n_genes: int | None,
    data_name: str = "atlas",
    packing: str = "both",
) -> list[dict]:
    import torch

    import scmulan
    from scmulan.nn import CSentenceTransformer, TransformerConfig
    from scmulan.sentence import CellSource, TrainingSentenceDataset, forward_heads, pack_batch
    from scmulan.train import clip_grad_norm, parameter_groups, set_objective

    dev = torch.device(device)
    released = RELEASED.get(preset, {})
    n_genes = n_genes or released.get("genes", 500)
    if data_name == "pbmc":
        data = scmulan.datasets.pbmc68k()
        n_genes = data.n_vars
        fields = ["coarse_cell_type", "cell_type"]
    else:
        data = scmulan.datasets.synthetic_atlas(n_cells=n_cells, n_genes=n_genes, seed=0)
        fields = ["organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease"]
    scmulan.pp.prepare(data)
    scmulan.SCMULAN.setup_anndata(data, **{f"{f}_key": f for f in fields})
    model = scmulan.SCMULAN(data, config="tiny")  # vocabulary and sentences; the network is built below
    vocab_size = max(len(model.vocab), released.get("vocab_size", 0))
    torch.manual_seed(0)
    net = CSentenceTransformer(TransformerConfig.from_preset(preset, vocab_size=vocab_size)).to(dev).train()
    tasks = scmulan.sentence.TASKS if data_name == "atlas" else ("generation", "annotation")  # PBMC: no metadata
    spec = model.layout.task_spec(model.obs_keys_, [1.0 if t in tasks else 0.0 for t in scmulan.sentence.TASKS])
    task_ids = {t: model.vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    source = CellSource(data, model.vocab, obs_keys=model.obs_keys_)
    dataset = TrainingSentenceDataset(
        [source], spec, task_ids, end_id=model.vocab.end_id, pad_id=model.vocab.pad_id, batch_size=batch_size
    )
    batches = []
    while len(batches) < steps + 3:
        batches += list(dataset)
        dataset.epoch += 1
    opt = torch.optim.AdamW(parameter_groups(net, 0.01), lr=1e-3, fused=dev.type == "cuda" or None)  # as the plan
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else torch.autocast(dev.type, enabled=False)
    )

    def step(b):
        b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
        with autocast:
            logits, values = forward_heads(net, b)  # the plan's forward: packed rows when the batch has them
            out = set_objective(logits, values, b["ids"], b["levels"], b["groups"])
        out.loss.backward()
        norm = clip_grad_norm(net.parameters(), 1.0)  # the plan's clipping, and its check (one device sync)
        if not torch.isfinite(norm):
            msg = f"non-finite gradient norm {norm.item()}"
            raise FloatingPointError(msg)
        opt.step()
        opt.zero_grad(set_to_none=True)

    paths = {"padded": batches, "packed": [pack_batch(b) for b in batches]}
    names = ["padded", "packed"] if packing == "both" else [packing]
    for name in names:
        for b in paths[name][:3]:  # warm-up
            step(b)
    elapsed = dict.fromkeys(names, 0.0)
    for i in range(3, 3 + steps):  # alternate the paths batch by batch: both see the same machine state
        for name in names:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            step(paths[name][i])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            elapsed[name] += time.perf_counter() - t
    timed = batches[3 : 3 + steps]
    real = int(sum(int(b["lengths"].sum()) for b in timed))
    mean_len = float(np.mean([float(b["lengths"].float().mean()) for b in timed]))
    peak = matmul_peak(dev, torch.bfloat16 if precision == "bf16" else torch.float32)
    rows = []
    for name in names:
        computed = int(sum(b["packed_ids" if name == "packed" else "ids"].numel() for b in paths[name][3 : 3 + steps]))
        achieved = flops_per_token(net.config, mean_len) * real / elapsed[name]
        rows.append(
            {
                "preset": preset,
                "data": data_name,
                "path": name,
                "parameters": net.num_parameters(),
                "genes": n_genes,
                "vocab_size": vocab_size,
                "device": str(dev),
                "precision": precision,
                "batch_size": batch_size,
                "steps": steps,
                "tokens_per_s": real / elapsed[name],
                "computed_tokens_per_s": computed / elapsed[name],
                "real_token_fraction": real / computed,
                "mean_sentence_length": mean_len,
                "seconds_per_step": elapsed[name] / steps,
                "measured_peak_tflops": peak / 1e12,
                "mfu": achieved / peak,
            }
        )
    if len(rows) == 2:
        rows[1]["speedup_vs_padded"] = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    return rows


def estimate(cells_seen: float, tokens_per_cell: list[float], peak_tflops: float, mfus: list[float]) -> list[dict]:
    """Pre-training arithmetic for the released scMulan-v1 network (|V| = 2,222): tokens, FLOPs, GPU-hours."""
    from scmulan.nn import TransformerConfig

    config = TransformerConfig.from_preset("scmulan-v1", vocab_size=RELEASED["scmulan-v1"]["vocab_size"])
    rows = []
    for length in tokens_per_cell:
        tokens = cells_seen * length
        flops = flops_per_token(config, length) * tokens
        for mfu in mfus:
            hours = flops / (mfu * peak_tflops * 1e12) / 3600
            rows.append(
                {
                    "cells_seen": cells_seen,
                    "tokens_per_cell": length,
                    "tokens": tokens,
                    "flops_per_token": flops_per_token(config, length),
                    "total_flops": flops,
                    "peak_tflops": peak_tflops,
                    "mfu": mfu,
                    "gpu_hours": hours,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument(
        "--genes", type=int, default=None, help="genes of the synthetic atlas (default: 2000 for scmulan-v1, else 500)"
    )
    parser.add_argument("--data", choices=["atlas", "pbmc"], default="atlas")
    parser.add_argument("--estimate", action="store_true", help="only the pre-training arithmetic (see above)")
    parser.add_argument("--cells-seen", type=float, default=100e6)
    parser.add_argument("--tokens-per-cell", type=float, nargs="+", default=[540, 700])
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--mfu", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    parser.add_argument("--packing", choices=["both", "padded", "packed"], default="both")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/results/training_throughput.json")
    args = parser.parse_args()

    if args.estimate:
        print(
            f"{'cells seen':>11s} {'tok/cell':>8s} {'tokens':>9s} {'GFLOP/tok':>9s} {'EFLOP':>7s} {'MFU':>4s} {'GPU-h':>7s}"
        )
        for r in estimate(args.cells_seen, args.tokens_per_cell, args.peak_tflops, args.mfu):
            print(
                f"{r['cells_seen']:11.3g} {r['tokens_per_cell']:8.0f} {r['tokens']:9.3g} "
                f"{r['flops_per_token'] / 1e9:9.2f} {r['total_flops'] / 1e18:7.1f} {r['mfu']:4.0%} {r['gpu_hours']:7.0f}"
            )
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = [
        r
        for p in args.preset
        for r in run(
            p, args.steps, args.batch_size, args.device, args.precision, args.cells, args.genes, args.data, args.packing
        )
    ]
    print(
        f"{'preset':11s} {'data':5s} {'path':6s} {'params':>11s} {'|V|':>5s} {'tokens/s':>10s} {'s/step':>7s} "
        f"{'real':>5s} {'len':>5s} {'peak TF/s':>9s} {'MFU':>6s}"
    )
    for r in rows:
        print(
            f"{r['preset']:11s} {r['data']:5s} {r['path']:6s} {r['parameters']:11,d} {r['vocab_size']:5d} "
            f"{r['tokens_per_s']:10.0f} {r['seconds_per_step']:7.3f} {r['real_token_fraction']:5.3f} "
            f"{r['mean_sentence_length']:5.0f} {r['measured_peak_tflops']:9.3f} {r['mfu']:6.1%}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
