"""Training throughput: tokens/s of the multitask training step, and model-FLOPs utilisation (MFU).

The step is the training plan's: forward over right-padded sentences, both heads at every position, the set
objective, backward, gradient clipping and AdamW. Real tokens (not padding) are counted. MFU follows nanoGPT's
estimate (6 x non-embedding parameters + attention per token, forward and backward) against a matmul peak measured in
the same process (fp32 on CPU; bf16 on CUDA).

    python benchmarks/training_throughput.py                                  # tiny and small on this CPU
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


def run(preset: str, steps: int, batch_size: int, device: str, precision: str, n_cells: int, n_genes: int) -> dict:
    import torch

    import scmulan
    from scmulan.sentence import CellSource, TrainingSentenceDataset
    from scmulan.train import set_objective
    from scmulan.train._plan import parameter_groups

    dev = torch.device(device)
    data = scmulan.datasets.synthetic_atlas(n_cells=n_cells, n_genes=n_genes, seed=0)
    scmulan.pp.prepare(data)
    fields = ["organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease"]
    scmulan.SCMULAN.setup_anndata(data, **{f"{f}_key": f for f in fields})
    model = scmulan.SCMULAN(data, config=preset)
    net = model.module.to(dev).train()
    spec = model._task_spec(scmulan.sentence.TASKS, None, None, 0.5)
    task_ids = {t: model.vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    source = CellSource(data, model.vocab, obs_keys=model.obs_keys_)
    dataset = TrainingSentenceDataset(
        [source], spec, task_ids, end_id=model.vocab.end_id, pad_id=model.vocab.pad_id, batch_size=batch_size
    )
    batches = []
    while len(batches) < steps + 3:
        batches += list(dataset)
        dataset.epoch += 1
    opt = torch.optim.AdamW(parameter_groups(net, 0.01), lr=1e-3, fused=dev.type == "cuda" or None)
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else torch.autocast(dev.type, enabled=False)
    )

    def step(b):
        b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
        with autocast:
            hidden = net(b["ids"], b["levels"])
            logits, values = net.heads(hidden)
            out = set_objective(logits, values, b["ids"], b["levels"], b["groups"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:3]:  # warm-up
        step(b)
    timed = batches[3 : 3 + steps]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in timed:
        step(b)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t
    real = int(sum(int(b["lengths"].sum()) for b in timed))
    padded = int(sum(b["ids"].numel() for b in timed))
    mean_len = float(np.mean([float(b["lengths"].float().mean()) for b in timed]))
    peak = matmul_peak(dev, torch.bfloat16 if precision == "bf16" else torch.float32)
    achieved = flops_per_token(net.config, mean_len) * real / elapsed
    return {
        "preset": preset,
        "parameters": net.num_parameters(),
        "device": str(dev),
        "precision": precision,
        "batch_size": batch_size,
        "steps": steps,
        "tokens_per_s": real / elapsed,
        "padded_tokens_per_s": padded / elapsed,
        "padding_fraction": 1 - real / padded,
        "mean_sentence_length": mean_len,
        "seconds_per_step": elapsed / steps,
        "measured_peak_tflops": peak / 1e12,
        "mfu": achieved / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/results/training_throughput.json")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = [
        run(p, args.steps, args.batch_size, args.device, args.precision, args.cells, args.genes) for p in args.preset
    ]
    print(
        f"{'preset':11s} {'params':>11s} {'tokens/s':>10s} {'s/step':>7s} {'pad':>5s} {'len':>5s} {'peak TF/s':>9s} {'MFU':>6s}"
    )
    for r in rows:
        print(
            f"{r['preset']:11s} {r['parameters']:11,d} {r['tokens_per_s']:10.0f} {r['seconds_per_step']:7.3f} "
            f"{r['padding_fraction']:5.2f} {r['mean_sentence_length']:5.0f} {r['measured_peak_tflops']:9.3f} {r['mfu']:6.1%}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
