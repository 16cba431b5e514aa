"""Corpus loaders side by side: cells/s and peak RSS of the same cells from memory, an ``.h5ad`` file and TileDB-SOMA.

Draws a synthetic atlas of raw counts (``scmulan.datasets.synthetic_atlas``), writes it once as an ``.h5ad`` file
and once as a TileDB-SOMA experiment (``tiledbsoma.io.from_anndata``, the Census layout: ``X`` layer ``raw``), then
measures each source in its own subprocess, so that its peak RSS is its own:

- ``memory``: :class:`scmulan.sentence.CellSource` over the AnnData read into memory (the upper bound: no I/O);
- ``h5ad``: :class:`~scmulan.sentence.CellSource` over the file, read ``backed="r"`` (the corpus-shard path);
- ``soma``: :class:`~scmulan.sentence.SomaSource` over the experiment's URI (the CELLxGENE Census path);
- ``annbatch``: :class:`~scmulan.sentence.AnnbatchSource` over an annbatch collection of the same cells, in the same
  order (``add_adatas(shuffle=False)``, annbatch's other defaults). annbatch needs Python >= 3.12: pass
  ``--annbatch-python`` an interpreter that has it (torch is not needed there); without it this row is left out.

For each source two passes over all cells: ``read`` (rows in order, ``chunk_size`` at a time, normalised on the
fly) and ``epoch`` (one shuffled training epoch of :class:`~scmulan.sentence.TrainingSentenceDataset` with the
settings ``SCMULAN.train`` uses for a corpus: blocks of 256 consecutive rows, chunks of 2,048 cells, in-process).
Every source must give the same matrix (checked on the first chunk) and the same training batches (checked by a
fingerprint of the epoch's batches). Peak RSS is ``VmHWM``, reset after the source is built, with the RSS at that
point given too.

    python benchmarks/loader_throughput.py                       # 50,000 cells x 1,000 genes
    python benchmarks/loader_throughput.py --n-cells 10000       # a quick run
    python benchmarks/loader_throughput.py --annbatch-python ~/py312/bin/python   # with the annbatch row

Results are printed as a table and written to ``benchmarks/results/loader_throughput.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIELDS = ("organ", "coarse_cell_type", "cell_type", "sex", "disease")
SOURCES = ("memory", "h5ad", "soma", "annbatch")
#: Written by ``--annbatch-python``: the .h5ad as an annbatch collection, rows in the same order.
ANNBATCH_WRITER = """
import sys
from annbatch import DatasetCollection
DatasetCollection(sys.argv[2]).add_adatas([sys.argv[1]], shuffle=False)
"""


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _rss_baseline_mb() -> float:
    """Current RSS, with the peak (``VmHWM``) reset to it where Linux allows (so a phase's peak is its own)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_peak_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- the data


def build(args) -> dict:
    """Write the atlas as ``cells.h5ad`` and ``cells_soma/`` under ``args.data``."""
    import tiledbsoma.io

    import scmulan

    t0 = time.perf_counter()
    atlas = scmulan.datasets.synthetic_atlas(n_cells=args.n_cells, n_genes=args.n_genes, seed=args.seed)
    del atlas.uns["synthetic_atlas"]
    drawn = time.perf_counter() - t0
    t0 = time.perf_counter()
    atlas.write_h5ad(args.data / "cells.h5ad")
    h5ad_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tiledbsoma.io.from_anndata(str(args.data / "cells_soma"), atlas, measurement_name="RNA", X_layer_name="raw")
    soma_s = time.perf_counter() - t0
    annbatch_s = None
    if args.annbatch_python:
        t0 = time.perf_counter()
        cmd = [
            args.annbatch_python,
            "-c",
            ANNBATCH_WRITER,
            str(args.data / "cells.h5ad"),
            str(args.data / "cells.zarr"),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        annbatch_s = time.perf_counter() - t0

    def size_mb(path: Path) -> float:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files) / 2**20

    return {
        "cells": atlas.n_obs,
        "genes": atlas.n_vars,
        "nnz": int(atlas.X.nnz),
        "draw_s": drawn,
        "write_h5ad_s": h5ad_s,
        "write_soma_s": soma_s,
        "h5ad_mb": size_mb(args.data / "cells.h5ad"),
        "soma_mb": size_mb(args.data / "cells_soma"),
        "write_annbatch_s": annbatch_s,
        "annbatch_mb": size_mb(args.data / "cells.zarr") if annbatch_s is not None else None,
    }


def _vocab(path: Path):
    import anndata as ad

    from scmulan.vocab import Vocabulary

    backed = ad.read_h5ad(path, backed="r")
    vocab = Vocabulary.build(
        list(backed.var_names), {f: [str(c) for c in backed.obs[f].cat.categories] for f in FIELDS}
    )
    backed.file.close()
    return vocab


def _source(name: str, args, vocab):
    import anndata as ad

    from scmulan.sentence import AnnbatchSource, CellSource, SomaSource

    keys = {f: f for f in FIELDS}
    if name == "memory":
        return CellSource(ad.read_h5ad(args.data / "cells.h5ad"), vocab, obs_keys=keys, normalize=True)
    if name == "h5ad":
        return CellSource(args.data / "cells.h5ad", vocab, obs_keys=keys, normalize=True)
    if name == "annbatch":
        return AnnbatchSource(args.data / "cells.zarr", vocab, obs_keys=keys, normalize=True)
    return SomaSource(str(args.data / "cells_soma"), vocab, obs_keys=keys, normalize=True)


# ---------------------------------------------------------------------------- one source, in a child process


def measure(name: str, args) -> dict:
    """Both passes over one source; RSS figures for this process only."""
    import torch

    from scmulan.sentence import TaskSpec, TrainingSentenceDataset

    torch.set_num_threads(1)
    vocab = _vocab(args.data / "cells.h5ad")
    t0 = time.perf_counter()
    source = _source(name, args, vocab)
    setup_s = time.perf_counter() - t0
    rss_base = _rss_baseline_mb()

    t0 = time.perf_counter()
    first = None
    for _, X, _ in source.iter_chunks(args.chunk_size):
        if first is None:
            first = hashlib.sha256(X.data.tobytes() + X.indices.tobytes() + X.indptr.tobytes()).hexdigest()[:16]
    read_s = time.perf_counter() - t0

    task_ids = {t: vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    ds = TrainingSentenceDataset(
        [source],
        TaskSpec(FIELDS),
        task_ids,
        end_id=vocab.end_id,
        pad_id=vocab.pad_id,
        batch_size=args.batch_size,
        chunk_size=args.train_chunk_size,
        block_size=args.block_size,
        seed=args.seed,
        warn_truncation=False,
    )
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    n_batches = 0
    for batch in ds:
        n_batches += 1
        digest.update(batch["ids"].numpy().tobytes())
        digest.update(batch["levels"].numpy().tobytes())
    epoch_s = time.perf_counter() - t0
    return {
        "cells": source.n_obs,
        "setup_s": setup_s,
        "read_s": read_s,
        "epoch_s": epoch_s,
        "read_cells_per_s": source.n_obs / read_s,
        "epoch_cells_per_s": ds.n_cells / epoch_s,
        "batches": n_batches,
        "rss_after_setup_mb": rss_base,
        "rss_peak_mb": _rss_peak_mb(),
        "first_chunk_sha256": first,
        "epoch_batches_sha256": digest.hexdigest()[:16],
    }


# ---------------------------------------------------------------------------- driver


def _child(phase: str, args) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--data", str(args.data)]
    for key in ("n_cells", "n_genes", "chunk_size", "train_chunk_size", "batch_size", "block_size", "seed"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.annbatch_python:
        cmd += ["--annbatch-python", args.annbatch_python]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-cells", type=int, default=50_000)
    p.add_argument("--n-genes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=4096, help="cells per read in the `read` pass")
    p.add_argument("--train-chunk-size", type=int, default=2048, help="TrainingSentenceDataset chunk_size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=256, help="TrainingSentenceDataset block_size")
    p.add_argument("--data", type=Path, default=None, help="folder with cells.h5ad and cells_soma/ (built if empty)")
    p.add_argument("--annbatch-python", default=None, help="a Python (>= 3.12) with annbatch, for the annbatch row")
    p.add_argument("--out", type=Path, default=HERE / "results" / "loader_throughput.json")
    p.add_argument("--phase", choices=["build", *SOURCES], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.phase:  # a child process: one measurement, JSON on the last line
        result = build(args) if args.phase == "build" else measure(args.phase, args)
        print(json.dumps(result))
        return

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        args.data = args.data or Path(tmp)
        args.data.mkdir(parents=True, exist_ok=True)
        data = _child("build", args) if not (args.data / "cells.h5ad").exists() else {"folder": str(args.data)}
        sources = [s for s in SOURCES if s != "annbatch" or (args.data / "cells.zarr").exists()]
        results = {name: _child(name, args) for name in sources}
    for key in ("first_chunk_sha256", "epoch_batches_sha256"):
        if len({r[key] for r in results.values()}) != 1:
            msg = f"the sources disagree ({key}): {[r[key] for r in results.values()]}"
            raise AssertionError(msg)

    import tiledbsoma
    import torch

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "tiledbsoma": tiledbsoma.__version__,
            "platform": platform.platform(),
            "load_average_1min": [load_before, os.getloadavg()[0]],
        },
        "data": data,
        "settings": {
            k: getattr(args, k) for k in ("chunk_size", "train_chunk_size", "batch_size", "block_size", "seed")
        },
        "results": results,
    }
    print(f"data: {json.dumps(data)}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = (
        f"{'source':<8} {'setup s':>8} {'read cells/s':>13} {'epoch cells/s':>14} "
        f"{'RSS after setup MB':>19} {'peak RSS MB':>12} {'peak - setup MB':>16}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<8} {r['setup_s']:>8.2f} {r['read_cells_per_s']:>13,.0f} {r['epoch_cells_per_s']:>14,.0f} "
            f"{r['rss_after_setup_mb']:>19,.0f} {r['rss_peak_mb']:>12,.0f} "
            f"{r['rss_peak_mb'] - r['rss_after_setup_mb']:>16,.0f}"
        )
    print("same first chunk and same training batches from every source: yes")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
