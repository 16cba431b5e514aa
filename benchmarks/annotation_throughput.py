"""Annotation throughput and peak memory: scmulan's batched, cached decoding vs the original scMulan algorithm.

Methods, all on the same random weights and the same cells, timed in the same process:

- ``ours_constrained``: ``model.annotate(adata)`` (the public API: sentences built from the AnnData, length-bucketed
  right-padded batches, one prompt pass that fills a key/value cache, then cached one-token steps; step 1 restricted
  to coarse types, step 2 to fine types);
- ``ours_legacy``: ``model.annotate(adata, legacy=True)`` (same machinery, the original's masking, 3 steps; always
  fp32, as the package runs legacy decoding);
- ``baseline``: the original scMulan's algorithm (``generate_cellGenesis(top_k=1)``, scmulan-original.md §3.1-3.2),
  written out here: one cell at a time (batch size 1), genes > 0 in reverse column order binned with
  ``np.digitize(v, np.linspace(0, max, 11), right=True)`` + ``<PCT>``, then 3 steps that each run ``net(...)`` over the
  **whole growing sequence** (no cache), mask every entity already in the sequence except the last, keep the top-1
  logit, softmax, ``torch.multinomial``, level = ``clamp(round(value), 0, 10)``; label = the 2nd generated token,
  embedding = the final hidden state at the first generated token. Only the head outputs at the last position are
  computed (as the original does). The original's pandas/tokenizer overheads are NOT included (see
  ``sentence_throughput.py`` for those), so the baseline is, if anything, faster than the original.

The baseline's labels and embeddings are checked against ``ours_legacy`` (they must agree: same algorithm), both in
fp32. Every method reports the precision it ran in, and its speed-up is against the baseline in that precision: with
``--dtype bf16`` the baseline runs twice, in bf16 (``baseline``, the reference of ``ours_constrained``) and in fp32
(``baseline_fp32``, the reference of ``ours_legacy`` and of the agreement check).

Network: a random-weight :class:`scmulan.nn.CSentenceTransformer` of each preset with a legacy-sized vocabulary
(2,222 entities), written as an original-format checkpoint and loaded with ``SCMULAN.from_legacy_checkpoint``. The
vocabulary is the original ``meta_info.pt`` when found (``--meta-info``, ``$SCMULAN_PARITY_DIR`` or
``shared/reference/legacy_parity`` above the repository), else a synthetic one of the same layout. Cells:
``scmulan.datasets.synthetic_atlas`` raw counts over 2,000 genes, renamed position by position to the
vocabulary's 2,000 genes, then ``scmulan.pp.prepare(adata, model)`` (normalise_total 1e4 + log1p). At the atlas
defaults a cell expresses a quarter to a third of its genes, so prompts are ~500-700 tokens (the mean is reported);
``--density`` thins the expressed genes to get shorter sentences.

Peak memory: each method runs again in its own subprocess (same inputs, after a warm-up call); the peak RSS growth
is ``VmHWM - VmRSS`` with the peak reset to the current RSS right before the call (Linux ``/proc/self/clear_refs``;
elsewhere ``ru_maxrss`` deltas, which miss peaks below the setup's). This counts torch's CPU tensors (which
``tracemalloc`` does not see). On CUDA the peak of ``torch.cuda.max_memory_allocated`` is reported as well.

GPU (needs a CUDA machine; nothing here is GPU-specific except what the flags select)::

    python benchmarks/annotation_throughput.py --preset scmulan-v1 --device cuda --dtype bf16 \\
        --n-cells 2048 --baseline-cells 64 --batch-size 128

reports tokens/s (prompt + decoded tokens) and the achieved fraction of a matmul peak in each method's precision,
measured in the same script (a loop of 8192 x 8192 ``torch.matmul``). ``--dtype bf16`` is the package's default on CUDA (autocast) for
``ours_constrained`` and ``baseline``; ``ours_legacy`` stays fp32 (see above). ``--dtype fp32`` switches the autocast
off for every method.

CPU (the figures in benchmarks/README.md)::

    python benchmarks/annotation_throughput.py --preset tiny small

Results are printed as a table and written to ``benchmarks/results/annotation_throughput.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHODS = ("ours_constrained", "ours_legacy", "baseline")
BASELINE_FP32 = "baseline_fp32"  # with --dtype bf16: the baseline again in fp32, to compare with ours_legacy
LEGACY_VOCAB_SIZE = 2222
INT8 = "ours_int8"  # --int8: annotate(quantize=True), the CPU's opt-in int8 path
# --wide-batches: ours_constrained with the accelerators' token budget on the CPU too (batch_size cells per pass, as
# before the CPU budget of scmulan.model._inference.decoding_token_budget)
WIDE = "ours_wide_batches"
# --aten-gelu: ours_constrained with torch's own tanh-GELU kernel after each MLP's first linear layer (before
# scmulan.nn.model.tanh_gelu and linear_tanh_gelu)
ATEN_GELU = "ours_aten_gelu"
# --unfused-gelu: ours_constrained with scmulan's x * sigmoid(2u) after the linear layer (before linear_tanh_gelu
# fused the GELU into oneDNN's matrix product)
UNFUSED_GELU = "ours_unfused_gelu"
GELU_VARIANTS = (ATEN_GELU, UNFUSED_GELU)


# ---------------------------------------------------------------------------- memory


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- inputs


def find_meta_info(given: Path | None) -> Path | None:
    """The original ``meta_info.pt``: ``given``, ``$SCMULAN_PARITY_DIR``, or ``shared/reference/legacy_parity``."""
    if given is not None:
        return None if str(given) == "synthetic" else given
    candidates = []
    if os.environ.get("SCMULAN_PARITY_DIR"):
        candidates.append(Path(os.environ["SCMULAN_PARITY_DIR"]) / "meta_info.pt")
    candidates += [p / "shared" / "reference" / "legacy_parity" / "meta_info.pt" for p in REPO.parents]
    return next((c for c in candidates if c.is_file()), None)


def synthetic_meta_info(genes: list[str]) -> dict:
    """A vocabulary in the original layout and size (2,222): <E>, 2,000 genes, 7 organs, 114 cell types (90 fine +
    24 coarse), 33 ages, 6 statuses, 33 regions, 10 technologies, F/M, <PCT>, <SPToken1..15>."""
    organ = [f"Organ{i}" for i in range(7)]
    cell_type, mct = [f"Fine type {i}" for i in range(90)], [f"Coarse type {i}" for i in range(24)]
    age = [f"{i} year" for i in range(33)]
    status = [f"Status {i}" for i in range(6)]
    region = [f"Region {i}" for i in range(33)]
    tech = [f"Tech {i}" for i in range(10)]
    sex = ["F", "M"]
    tasks = ["<PCT>"] + [f"<SPToken{i}>" for i in range(1, 16)]
    token_set = ["<E>", *genes, *organ, *mct, *cell_type, *age, *status, *region, *tech, *sex, *tasks]
    assert len(token_set) == LEGACY_VOCAB_SIZE, len(token_set)
    return {
        "token_set": token_set,
        "gene_set": list(genes),
        "organ": organ,
        "region": region,
        "MCT": mct,
        "cell_type": cell_type,
        "donor_gender": sex,
        "age_bin": age,
        "seq_tech": tech,
        "sample_status": status,
    }


def legacy_checkpoint(preset: str, seed: int) -> dict:
    """A random-weight network of ``preset`` (|V| = 2,222) in the original checkpoint format."""
    import re

    import torch

    from scmulan.hub import LEGACY_KEY_MAP
    from scmulan.nn import CSentenceTransformer, TransformerConfig

    # the original format has no entity-head bias
    config = TransformerConfig.from_preset(preset, vocab_size=LEGACY_VOCAB_SIZE, head_bias=False)
    torch.manual_seed(seed)
    net = CSentenceTransformer(config)
    inverse = [
        (re.compile("^" + re.escape(dst).replace(r"\{i\}", r"(\d+)") + "$"), src.replace("{i}", r"\1"))
        for src, dst in LEGACY_KEY_MAP.items()
    ]
    state = {}
    for key, tensor in net.state_dict().items():
        found = next(((p, r) for p, r in inverse if p.match(key)), None)
        if found is None:  # a part the original format does not have (the level head of the next-entity objective)
            continue
        pattern, replacement = found
        state[pattern.sub(replacement, key)] = tensor
    model_args = {
        "block_size": 1550,
        "vocab_size": config.vocab_size,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "dropout": 0.0,
        "bias": config.bias,
        "train_mode": "pretrain",
        "expression_level": 10,
        "ele": 1,
    }
    return {"model": state, "model_args": model_args}


def build_inputs(args, preset: str, workdir: Path) -> dict:
    """Write the checkpoint, the vocabulary and the prepared cells of one preset into ``workdir``."""
    import anndata as ad
    import torch

    import scmulan

    meta = find_meta_info(args.meta_info)
    vocab_source = str(meta) if meta is not None else "synthetic (original layout, 2,222 entities)"
    if meta is None:
        genes = [f"GENE{i:04d}" for i in range(2000)]
        meta = workdir / "meta_info.json"
        meta.write_text(json.dumps(synthetic_meta_info(genes)))
    ckpt = workdir / f"ckpt_{preset}.pt"
    torch.save(legacy_checkpoint(preset, args.seed), ckpt)
    model = scmulan.SCMULAN.from_legacy_checkpoint(ckpt, meta)
    h5ad = workdir / "cells.h5ad"
    if not h5ad.exists():
        cells = scmulan.datasets.synthetic_atlas(n_cells=args.n_cells, n_genes=2000, seed=args.seed)
        if args.density < 1.0:  # thin the expressed entries (shorter sentences)
            X = cells.X.tocsr().copy()
            keep = np.random.default_rng(args.seed).random(X.nnz) < args.density
            X.data = np.where(keep, X.data, 0).astype(X.dtype)
            X.eliminate_zeros()
            cells.X = X
        cells.var_names = list(model.vocab.genes)  # position by position onto the model's gene set
        cells.obs = cells.obs[[]]  # a query: no labels
        scmulan.pp.prepare(cells, model)
        cells = ad.AnnData(cells.X, obs=cells.obs[[]], var=cells.var[[]])  # only the log-normalised matrix
        cells.write_h5ad(h5ad)
    return {"checkpoint": str(ckpt), "meta_info": str(meta), "cells": str(h5ad), "vocabulary": vocab_source}


# ---------------------------------------------------------------------------- the methods


def methods(args) -> tuple[str, ...]:
    """The methods of a run: with ``--dtype bf16`` also the fp32 baseline (the reference of ``ours_legacy``); with
    ``--int8`` also ``ours_int8`` (``annotate(quantize=True)``: int8 dynamic quantisation of the linear layers, CPU);
    with ``--wide-batches`` also ``ours_wide_batches`` (the CPU token budget raised to the accelerators' one); with
    ``--aten-gelu`` also ``ours_aten_gelu`` (torch's tanh-GELU kernel after the MLP's linear layer); with
    ``--unfused-gelu`` also ``ours_unfused_gelu`` (scmulan's ``tanh_gelu`` after it, not fused into the product)."""
    extra = (
        ((INT8,) if getattr(args, "int8", False) else ())
        + ((WIDE,) if getattr(args, "wide_batches", False) else ())
        + ((ATEN_GELU,) if getattr(args, "aten_gelu", False) else ())
        + ((UNFUSED_GELU,) if getattr(args, "unfused_gelu", False) else ())
    )
    return METHODS + extra + ((BASELINE_FP32,) if args.dtype == "bf16" else ())


def method_dtype(name: str, args) -> str:
    """Precision a method runs in: legacy decoding is always fp32 in the package; the rest follow ``--dtype``."""
    if name == INT8:
        return "int8"
    return "fp32" if name in ("ours_legacy", BASELINE_FP32) else args.dtype


def reference_baseline(name: str, args) -> str:
    """The baseline run in the same precision as ``name`` (its speed-up is measured against it)."""
    return BASELINE_FP32 if method_dtype(name, args) == "fp32" and args.dtype == "bf16" else "baseline"


def _autocast(device, dtype: str):
    import torch

    if device.type == "cuda" and dtype == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def baseline_prompts(model, adata) -> list[tuple[np.ndarray, np.ndarray]]:
    """The original's per-cell prompt: genes > 0 in column order, reversed, binned against linspace(0, max, 11)."""
    from scipy import sparse

    X = adata.X.tocsr() if sparse.issparse(adata.X) else sparse.csr_matrix(adata.X)
    index = model.vocab.gene_index()  # symbol -> token id
    col_token = np.array([index[g] for g in adata.var_names], dtype=np.int64)
    task = model.vocab.task_id("<annotate>")
    out = []
    for i in range(X.shape[0]):
        row = X.getrow(i)
        order = np.argsort(col_token[row.indices], kind="stable")  # column order = gene-set order
        values, tokens = row.data[order][::-1], col_token[row.indices][order][::-1]
        levels = np.digitize(values, np.linspace(0, values.max(), 11), right=True) if len(values) else values
        out.append((np.append(tokens, task).astype(np.int64), np.append(levels, 0).astype(np.int64)))
    return out


def run_baseline(model, prompts, device, dtype: str, n_steps: int = 3):
    """The original ``generate_cellGenesis(top_k=1)`` per cell: full recompute at every step, batch size 1."""
    import torch

    net = model.module.to(device).eval()
    end = model.vocab.end_id
    is_ct = model.parts().cell_type_mask()
    labels, embedding = [], np.zeros((len(prompts), net.config.n_embd), dtype=np.float32)
    with torch.inference_mode(), _autocast(device, dtype):
        for c, (ids_np, lv_np) in enumerate(prompts):
            ids = torch.as_tensor(ids_np, device=device)[None]
            levels = torch.as_tensor(lv_np, device=device)[None]
            max_len = ids.shape[1] + n_steps
            while True:
                hidden = net(ids, levels)
                logits, values = net.heads(hidden[:, -1])
                logits, values = logits.float(), values.float()
                logits[:, ids[0, :-1]] = float("-inf")  # every entity in the sequence except the most recent
                top = torch.topk(logits, 1).values[:, -1:]
                logits[logits < top] = float("-inf")
                probs = torch.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1)
                lvl = values.gather(1, nxt).round().clamp(0, 10).long()
                ids, levels = torch.cat([ids, nxt], 1), torch.cat([levels, lvl], 1)
                if int(nxt) == end or ids.shape[1] >= max_len:
                    break
            seq = ids[0].tolist()
            fine = seq[-2]
            labels.append(model.vocab.token(fine)[1] if is_ct[fine] else "Unclassified")
            embedding[c] = hidden[0, -2].float().cpu().numpy()
    return np.array(labels, dtype=object), embedding


def run_method(name: str, model, adata, prompts, args, device):
    """One timed call; returns (labels, embedding)."""
    if name in ("baseline", BASELINE_FP32):
        return run_baseline(model, prompts, device, method_dtype(name, args))
    if name == WIDE:
        from scmulan.model import _inference

        wide = 16 * model.module.config.n_embd * _inference.ACCELERATOR_MAX_TOKENS
        with mock.patch.object(_inference, "CPU_ACTIVATION_BYTES", wide):
            return run_method("ours_constrained", model, adata, prompts, args, device)
    if name in GELU_VARIANTS:
        import torch.nn.functional as F

        from scmulan.nn import model as network

        gelu = (lambda x: F.gelu(x, approximate="tanh")) if name == ATEN_GELU else network.tanh_gelu
        with mock.patch.object(network, "linear_tanh_gelu", lambda linear, x: gelu(linear(x))):
            return run_method("ours_constrained", model, adata, prompts, args, device)
    labels, embedding = model.annotate(
        adata,
        quantize=name == INT8,
        legacy=name == "ours_legacy",
        batch_size=args.batch_size,
        device=device,
        return_embedding=True,
        progress=False,
    )
    return labels["fine"].astype(str).to_numpy(), embedding


@contextlib.contextmanager
def precision(device, dtype: str):
    """``--dtype fp32`` on CUDA: switch off the package's bf16 autocast (it is a no-op on CPU anyway)."""
    if device.type == "cuda" and dtype == "fp32":
        from scmulan.model import _inference

        original = _inference.autocast
        _inference.autocast = lambda device, mixed_precision=True: contextlib.nullcontext()
        try:
            yield
        finally:
            _inference.autocast = original
    else:
        yield


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(inputs: dict, args, n_cells: int):
    import anndata as ad

    import scmulan

    model = scmulan.SCMULAN.from_legacy_checkpoint(inputs["checkpoint"], inputs["meta_info"])
    adata = ad.read_h5ad(inputs["cells"])[:n_cells].copy()
    return model, adata


# ---------------------------------------------------------------------------- FLOPs and the matmul peak


def model_flops(config, prompt_lengths: np.ndarray, n_steps: int = 3) -> float:
    """Useful FLOPs of greedy annotation: matmuls 2 * 12 d^2 per token and layer, causal attention 2 d L^2 per layer
    (QK^T and AV over the lower triangle), both heads at the last position of every step (2 * 2 V d)."""
    d, n_layer, V = config.n_embd, config.n_layer, config.vocab_size
    total_len = prompt_lengths + n_steps - 1  # positions that go through the blocks
    matmul = 2 * 12 * d * d * n_layer * total_len.sum()
    attention = 2 * d * n_layer * (total_len.astype(np.float64) ** 2).sum()
    heads = 2 * 2 * V * d * n_steps * len(prompt_lengths)
    return float(matmul + attention + heads)


def matmul_rate(a, b, device, seconds: float = 2.0) -> float:
    """Measured FLOP/s of ``a @ b`` (2-D) on ``device``: the best of timed loops of 10 products, after a warm-up."""
    import torch

    flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    for _ in range(3):
        torch.matmul(a, b)
    _sync(device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(10):
            torch.matmul(a, b)
        _sync(device)
        best = max(best, 10 * flops / (time.perf_counter() - t0))
    return best


def matmul_peak(device, dtype: str, n: int | None = None, seconds: float = 2.0) -> float:
    """Measured FLOP/s of a big square ``torch.matmul`` in ``dtype`` (the best of a timed loop)."""
    import torch

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    return matmul_rate(a, b, device, seconds)


# ---------------------------------------------------------------------------- one preset


def child_memory(method: str, inputs: dict, args, n_cells: int) -> dict:
    """Run in a subprocess: set up, warm up, reset the peak, run ``method`` once, report the peak growth."""
    import torch

    from scmulan._device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, adata = load(inputs, args, n_cells)
    prompts = baseline_prompts(model, adata) if method.startswith("baseline") else None
    with precision(device, args.dtype):
        run_method(method, model, adata[:8].copy(), prompts[:8] if prompts else None, args, device)  # warm-up
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before_cuda = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        exact = _reset_peak_rss()
        rss0 = _status_mb("VmRSS") if exact else _peak_rss_mb()
        run_method(method, model, adata, prompts, args, device)
        _sync(device)
    out = {"peak_rss_growth_mb": max(0.0, _peak_rss_mb() - rss0), "rss_before_mb": rss0, "peak_reset": exact}
    if device.type == "cuda":
        out["peak_cuda_growth_mb"] = (torch.cuda.max_memory_allocated(device) - before_cuda) / 2**20
    return out


def _memory_in_subprocess(method: str, inputs: dict, args, n_cells: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--child-inputs",
        json.dumps(inputs),
        "--child-n-cells",
        str(n_cells),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--threads",
        str(args.threads or 0),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_preset(args, preset: str, workdir: Path, peak_flops: dict[str, float]) -> dict:
    import torch

    from scmulan._device import resolve_device

    device = resolve_device(args.device)
    inputs = build_inputs(args, preset, workdir)
    model, adata = load(inputs, args, args.n_cells)
    n_base = min(args.baseline_cells or args.n_cells, args.n_cells)
    prompts = baseline_prompts(model, adata)
    lengths = np.array([len(p[0]) for p in prompts])
    results, outputs = {}, {}
    with precision(device, args.dtype):
        for name in methods(args):  # warm-up (first-call costs: allocator, kernels, lazy imports)
            run_method(name, model, adata[:8].copy(), prompts[:8], args, device)
        # the methods alternate within each repetition, so that a change of load on a shared machine reaches them alike
        cells_of = {name: adata[:n_base].copy() if name.startswith("baseline") else adata for name in methods(args)}
        best = dict.fromkeys(methods(args), float("inf"))
        for _ in range(max(1, args.repeats)):
            for name, cells in cells_of.items():
                _sync(device)
                t0 = time.perf_counter()
                outputs[name] = run_method(name, model, cells, prompts[: cells.n_obs], args, device)
                _sync(device)
                best[name] = min(best[name], time.perf_counter() - t0)
        for name, cells in cells_of.items():
            n = cells.n_obs
            constrained = name in ("ours_constrained", WIDE, *GELU_VARIANTS)
            steps = max(2, len(model.annotation_fields)) if constrained else 3
            tokens = lengths[:n].sum() + steps * n  # prompt tokens + decoded tokens
            flops = model_flops(model.module.config, lengths[:n], steps)
            results[name] = {
                "dtype": method_dtype(name, args),
                "n_cells": int(n),
                "seconds": best[name],
                "cells_per_s": n / best[name],
                "tokens_per_s": float(tokens / best[name]),
                "model_tflops_per_s": flops / best[name] / 1e12,
                "fraction_of_matmul_peak": flops
                / best[name]
                / peak_flops.get(method_dtype(name, args), peak_flops["fp32"]),
            }
    # the baseline is the original algorithm: it must agree with the legacy mode (both fp32) on the cells it ran
    ours_labels, ours_emb = outputs["ours_legacy"]
    base_labels, base_emb = outputs[reference_baseline("ours_legacy", args)]
    agreement = {
        "dtype": method_dtype("ours_legacy", args),
        "labels_equal_fraction": float(np.mean(ours_labels[:n_base] == base_labels)),
        "embedding_max_abs_diff": float(np.abs(ours_emb[:n_base] - base_emb).max()),
    }
    if INT8 in outputs:  # the int8 path against the fp32 one it replaces (the same decoding otherwise)
        agreement["int8_vs_fp32_labels_equal_fraction"] = float(
            np.mean(outputs[INT8][0] == outputs["ours_constrained"][0])
        )
        agreement["int8_vs_fp32_min_embedding_cosine"] = _min_cosine(outputs[INT8][1], outputs["ours_constrained"][1])
    if not args.no_memory:
        for name in methods(args):
            n = n_base if name.startswith("baseline") else args.n_cells
            results[name].update(_memory_in_subprocess(name, inputs, args, n))
    if INT8 in results:
        results[INT8]["speedup_vs_fp32"] = results[INT8]["cells_per_s"] / results["ours_constrained"]["cells_per_s"]
    if WIDE in results:  # the same decoding, batches of batch_size cells (the accelerators' token budget)
        results["ours_constrained"]["speedup_vs_wide_batches"] = (
            results["ours_constrained"]["cells_per_s"] / results[WIDE]["cells_per_s"]
        )
        agreement["wide_batches_labels_equal_fraction"] = float(
            np.mean(outputs[WIDE][0] == outputs["ours_constrained"][0])
        )
    for variant in (v for v in GELU_VARIANTS if v in results):  # the same decoding with another GELU
        key = variant.removeprefix("ours_")
        results["ours_constrained"][f"speedup_vs_{key}"] = (
            results["ours_constrained"]["cells_per_s"] / results[variant]["cells_per_s"]
        )
        agreement[f"{key}_labels_equal_fraction"] = float(
            np.mean(outputs[variant][0] == outputs["ours_constrained"][0])
        )
        agreement[f"{key}_min_embedding_cosine"] = _min_cosine(outputs[variant][1], outputs["ours_constrained"][1])
    for name in ("ours_constrained", "ours_legacy", *(m for m in (INT8, WIDE, *GELU_VARIANTS) if m in results)):
        reference = reference_baseline(name, args)
        results[name]["speedup_vs"] = reference
        results[name]["speedup_vs_baseline"] = results[name]["cells_per_s"] / results[reference]["cells_per_s"]
    n_params = model.module.num_parameters()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "preset": preset,
        "n_params": int(n_params),
        "vocabulary": inputs["vocabulary"],
        "mean_prompt_length": float(lengths.mean()),
        "prompt_length_range": [int(lengths.min()), int(lengths.max())],
        "baseline_agreement": agreement,
        "methods": results,
    }


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min((a * b).sum(1) / np.maximum(den, 1e-12)))


def _table(report: dict) -> str:
    head = (
        f"{'preset':<11} {'method':<17} {'dtype':<5} {'cells':>6} {'cells/s':>9} {'tokens/s':>10} {'x base':>7} "
        f"{'%peak':>6} {'peak RSS +MB':>12}"
    )
    lines = [head, "-" * len(head)]
    for run in report["runs"]:
        for name, r in run["methods"].items():
            mem = r.get("peak_rss_growth_mb")
            if r.get("peak_cuda_growth_mb") is not None:
                mem_s = f"{mem:.0f} (+{r['peak_cuda_growth_mb']:.0f} GPU)"
            else:
                mem_s = f"{mem:.1f}" if mem is not None else r.get("error", "-")[:12]
            lines.append(
                f"{run['preset']:<11} {name:<17} {r['dtype']:<5} {r['n_cells']:>6} {r['cells_per_s']:>9.1f} "
                f"{r['tokens_per_s']:>10.0f} "
                f"{r.get('speedup_vs_baseline', 1.0):>7.1f} {100 * r['fraction_of_matmul_peak']:>6.2f} {mem_s:>12}"
            )
        a = run["baseline_agreement"]
        lines.append(
            f"{'':<11} mean prompt length {run['mean_prompt_length']:.0f} (range {run['prompt_length_range']}); "
            f"baseline vs legacy ({a['dtype']}): labels equal {100 * a['labels_equal_fraction']:.0f}%, "
            f"embedding max |diff| {a['embedding_max_abs_diff']:.1e}"
        )
        if "wide_batches_labels_equal_fraction" in a:
            lines.append(
                f"{'':<11} token budget vs {WIDE}: "
                f"{run['methods']['ours_constrained']['speedup_vs_wide_batches']:.2f}x cells/s, labels equal "
                f"{100 * a['wide_batches_labels_equal_fraction']:.1f}%"
            )
        for variant in GELU_VARIANTS:
            key = variant.removeprefix("ours_")
            if f"{key}_labels_equal_fraction" in a:
                lines.append(
                    f"{'':<11} ours_constrained vs {variant}: "
                    f"{run['methods']['ours_constrained'][f'speedup_vs_{key}']:.2f}x cells/s, labels equal "
                    f"{100 * a[f'{key}_labels_equal_fraction']:.1f}%, min embedding cosine "
                    f"{a[f'{key}_min_embedding_cosine']:.6f}"
                )
        if "int8_vs_fp32_labels_equal_fraction" in a:
            int8 = run["methods"][INT8]
            lines.append(
                f"{'':<11} int8 vs fp32: {int8['speedup_vs_fp32']:.2f}x cells/s, labels equal "
                f"{100 * a['int8_vs_fp32_labels_equal_fraction']:.1f}%, min embedding cosine "
                f"{a['int8_vs_fp32_min_embedding_cosine']:.4f}"
            )
    return "\n".join(lines)


def int8_on_trained(preset: str, epochs: int, repeats: int = 2) -> dict:
    """``annotate(quantize=True)`` against fp32 on a model trained on PBMC (random weights give near-tied logits).

    A ``preset`` network trained ``epochs`` epochs on ``scmulan.datasets.pbmc68k()`` (700 cells, generation and
    annotation), then all 700 cells annotated in fp32 and in int8, alternating, best of ``repeats``.
    """
    import time
    import warnings

    import scmulan

    data = scmulan.datasets.pbmc68k()
    scmulan.pp.prepare(data)
    scmulan.SCMULAN.setup_anndata(data, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN(data, config=preset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=epochs, batch_size=32, enable_progress_bar=False, tasks=["generation", "annotation"])

    def run(quantize: bool) -> tuple[np.ndarray, np.ndarray, float]:
        t = time.perf_counter()
        labels, emb = model.annotate(data, quantize=quantize, return_embedding=True, progress=False, calibrated=False)
        return labels["fine"].astype(str).to_numpy(), emb, time.perf_counter() - t

    run(False), run(True)  # warm-up
    best = {False: float("inf"), True: float("inf")}
    out = {}
    for _ in range(repeats):
        for quantize in (False, True):
            labels, emb, seconds = run(quantize)
            best[quantize] = min(best[quantize], seconds)
            out[quantize] = (labels, emb)
    (ref, ref_emb), (q, q_emb) = out[False], out[True]
    cos = (q_emb * ref_emb).sum(1) / np.linalg.norm(q_emb, axis=1) / np.linalg.norm(ref_emb, axis=1)
    same = q == ref
    return {
        "preset": preset,
        "epochs": epochs,
        "cells": int(data.n_obs),
        "fp32_cells_per_s": data.n_obs / best[False],
        "int8_cells_per_s": data.n_obs / best[True],
        "speedup": best[False] / best[True],
        "labels_equal_fraction": float(same.mean()),
        "median_embedding_cosine": float(np.median(cos)),
        "min_embedding_cosine_same_label": float(cos[same].min()) if same.any() else float("nan"),
        "fp32_accuracy": float((ref == data.obs["cell_type"].astype(str).to_numpy()).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["tiny", "small"], help="network sizes (tiny small base scmulan-v1)")
    p.add_argument("--n-cells", type=int, default=256, help="cells annotated by every method")
    p.add_argument("--baseline-cells", type=int, default=None, help="run the baseline on the first N cells only")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--density", type=float, default=1.0, help="keep this fraction of expressed entries")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    p.add_argument(
        "--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: CUDA autocast (legacy decoding stays fp32)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per method; the fastest is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--meta-info",
        type=Path,
        default=None,
        help="the original meta_info.pt (default: searched; 'synthetic': a synthetic one)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    p.add_argument("--int8", action="store_true", help="also time annotate(quantize=True) (CPU int8) against fp32")
    p.add_argument(
        "--int8-trained",
        type=int,
        metavar="EPOCHS",
        default=None,
        help="only: train each preset EPOCHS epochs on PBMC, then int8 vs fp32 labels, embeddings and speed",
    )
    p.add_argument("--out", type=Path, default=HERE / "results" / "annotation_throughput.json")
    p.add_argument(
        "--wide-batches",
        action="store_true",
        help="also time annotate() with batch_size cells per pass whatever their length (the token budget of "
        "accelerators; the CPU's default before its own budget)",
    )
    p.add_argument(
        "--aten-gelu",
        action="store_true",
        help="also time annotate() with torch's own tanh-GELU kernel (F.gelu) after the MLP's first linear layer "
        "instead of scmulan's (fused into the product at CPU inference)",
    )
    p.add_argument(
        "--unfused-gelu",
        action="store_true",
        help="also time annotate() with scmulan's x * sigmoid(2u) GELU after the MLP's first linear layer instead of "
        "fused into oneDNN's matrix product",
    )
    p.add_argument("--child", choices=(*METHODS, BASELINE_FP32, INT8, WIDE, *GELU_VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--child-inputs", help=argparse.SUPPRESS)
    p.add_argument("--child-n-cells", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads == 0:
        args.threads = None

    import warnings

    warnings.filterwarnings("ignore", message=".*of the model's 2000 genes")
    import torch

    if args.child:
        print(json.dumps(child_memory(args.child, json.loads(args.child_inputs), args, args.child_n_cells)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.int8_trained is not None:
        rows = [int8_on_trained(preset, args.int8_trained, max(1, args.repeats)) for preset in args.preset]
        for r in rows:
            print(
                f"{r['preset']}: {r['epochs']} epochs on PBMC, fp32 accuracy {r['fp32_accuracy']:.1%}; int8 vs fp32: "
                f"{r['speedup']:.2f}x cells/s ({r['int8_cells_per_s']:.0f} vs {r['fp32_cells_per_s']:.0f}), labels "
                f"equal {r['labels_equal_fraction']:.2%}, median embedding cosine {r['median_embedding_cosine']:.5f}"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
        print(f"written {args.out}")
        return
    from scmulan._device import resolve_device

    device = resolve_device(args.device)
    if args.dtype == "bf16" and device.type != "cuda":
        p.error("--dtype bf16 needs a CUDA device (scmulan runs fp32 on CPU)")
    # each method's %peak is against the matmul peak of its own precision
    peaks = {dtype: matmul_peak(device, dtype) for dtype in dict.fromkeys([args.dtype, "fp32"])}
    peak = peaks[args.dtype]
    with tempfile.TemporaryDirectory(prefix="scmulan_bench_") as tmp:
        runs = [bench_preset(args, preset, Path(tmp), peaks) for preset in args.preset]
    report = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("child")},
        "matmul_peak_tflops": peak / 1e12,
        "matmul_peak_tflops_by_dtype": {k: v / 1e12 for k, v in peaks.items()},
        "memory": "peak RSS growth over the call (VmHWM - VmRSS after resetting the peak), one subprocess per method",
        "runs": runs,
    }
    print(
        f"device {report['machine']['device']}, torch threads {report['machine']['torch_threads']}, "
        "measured matmul peak " + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in peaks.items()) + " TFLOP/s"
    )
    print(_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
