"""Shared pieces of the quality comparisons (``compare_*.py``): data, splits, scmulan training with a cache, peers,
metrics, tables and the JSON report.

Not a public module: the scripts import it from their own folder. Heavy imports (torch, scanpy, scvi-tools) happen
inside the functions that need them.

The synthetic-atlas scripts (annotation, embedding, generation, metadata) share one scmulan model per split seed:
trained on the stratified 80 % of the atlas with all three tasks (generation, annotation, metadata) and saved under
``benchmarks/results/models/`` so that the next script loads it instead of training again (``--retrain`` ignores the
cache). The key of a saved model is every setting that changes it (data, split, config, epochs, tasks, seed) and a
fingerprint of scmulan's source code, so that a model trained by other code is never reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
MODELS = RESULTS / "models"
ATLAS_FIELDS = ("organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease")
ALL_TASKS = ("generation", "annotation", "metadata")
# Defaults shared by every script, so that the atlas scripts reuse each other's saved models.
# CPU defaults: sized so that `bash benchmarks/run_compare.sh` takes about half an hour on 2 shared cores with one
# torch thread. The protocol (5 seeds, a larger network and atlas) is the GPU command in the README.
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_CONFIG = "tiny"
DEFAULT_EPOCHS = 60  # the synthetic atlas (1,200 training cells: ~2,250 optimiser steps)
DEFAULT_PBMC_EPOCHS = (
    30  # pbmc68k (560 training cells, longer sentences: ~530 steps, about the time of 60 atlas epochs)
)
DEFAULT_ATLAS = {"cells": 1500, "genes": 400, "seed": 0, "marker_strength": 1.0}

# --------------------------------------------------------------------------------------------------- command line


def add_common_args(parser) -> None:
    """``--seeds``, ``--config``, ``--epochs`` and the rest every comparison takes."""
    seeds, config, epochs = DEFAULT_SEEDS, DEFAULT_CONFIG, DEFAULT_EPOCHS
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds), help="split seeds (default: %(default)s)")
    parser.add_argument("--config", default=config, help="scmulan network preset (default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=epochs, help="scmulan training epochs, synthetic atlas (default: %(default)s)"
    )
    parser.add_argument(
        "--pbmc-epochs",
        type=int,
        default=DEFAULT_PBMC_EPOCHS,
        help="scmulan training epochs, pbmc68k (annotation only; default: %(default)s)",
    )
    parser.add_argument(
        "--network",
        nargs="+",
        type=_network_override,
        default=[],
        metavar="FIELD=VALUE",
        help="scmulan network fields over the preset, e.g. gene_bag=true dropout=0.2 (values read as JSON)",
    )
    parser.add_argument("--lr", type=float, default=None, help="scmulan peak learning rate (default: by width)")
    parser.add_argument("--batch-size", type=int, default=32, help="scmulan training batch (default: %(default)s)")
    parser.add_argument(
        "--atlas-cells", type=int, default=DEFAULT_ATLAS["cells"], help="synthetic atlas cells (default: %(default)s)"
    )
    parser.add_argument(
        "--atlas-genes", type=int, default=DEFAULT_ATLAS["genes"], help="synthetic atlas genes (default: %(default)s)"
    )
    parser.add_argument(
        "--atlas-seed", type=int, default=DEFAULT_ATLAS["seed"], help="seed of the atlas itself (default: %(default)s)"
    )
    parser.add_argument(
        "--marker-strength",
        type=float,
        default=DEFAULT_ATLAS["marker_strength"],
        help="synthetic atlas cell-type signal (the data set's default: %(default)s)",
    )
    parser.add_argument(
        "--batch-strength",
        type=float,
        default=1.0,
        help="synthetic atlas technology effects (the data set's default: %(default)s; 0: none)",
    )
    parser.add_argument("--scvi-epochs", type=int, default=100, help="scVI epochs (default: %(default)s)")
    parser.add_argument("--scanvi-epochs", type=int, default=20, help="scANVI epochs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="scmulan/scvi device: auto, cpu, cuda (default: auto)")
    parser.add_argument("--retrain", action="store_true", help="ignore saved scmulan models")
    parser.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/<script>.json)")


def _network_override(text: str) -> tuple[str, object]:
    """``"gene_bag=true"`` -> ``("gene_bag", True)``: a network field and its value, read as JSON (else a string)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        msg = f"expected FIELD=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


_START_ENV: dict = {}


def setup_runtime(threads: int) -> None:
    """One torch thread (a shared 2-core machine thrashes with more), quiet warnings and loggers; records the
    commit and machine at the start (the report keeps them, and the commit at the end if it moved)."""
    import logging

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    _START_ENV.clear()
    _START_ENV.update(environment())


def accelerator(device: str) -> str:
    """Lightning accelerator for a ``--device`` value."""
    return {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}.get(device, "auto")


# --------------------------------------------------------------------------------------------------- data


def load_pbmc():
    """``scmulan.datasets.pbmc68k()`` prepared: X log-normalised, ``layers['counts']`` the recovered counts."""
    import scmulan

    data = scmulan.datasets.pbmc68k()
    scmulan.pp.prepare(data)
    return data


def load_atlas(args):
    """``scmulan.datasets.synthetic_atlas`` of the command line's size, seed and marker strength, prepared (X
    log-normalised, ``layers['counts']`` raw counts). Technology batch effects at ``--batch-strength`` (the data set's
    default strength unless given)."""
    import scmulan

    data = scmulan.datasets.synthetic_atlas(
        n_cells=args.atlas_cells,
        n_genes=args.atlas_genes,
        marker_strength=args.marker_strength,
        batch_strength=getattr(args, "batch_strength", 1.0),
        seed=args.atlas_seed,
    )
    scmulan.pp.prepare(data)
    return data


def split(labels, seed: int, test_size: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices (sorted). Classes with a single cell go to the training side."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels, dtype=str)
    values, counts = np.unique(labels, return_counts=True)
    single = np.isin(labels, values[counts < 2])
    idx = np.flatnonzero(~single)
    tr, te = train_test_split(idx, test_size=test_size, stratify=labels[idx], random_state=seed)
    return np.sort(np.concatenate([tr, np.flatnonzero(single)])), np.sort(te)


def without_labels(adata, keep: Sequence[str] = ()):
    """A copy whose ``obs`` keeps only ``keep``: what the model sees at inference."""
    query = adata.copy()
    query.obs = query.obs[list(keep)].copy()
    query.uns = {}
    for key in list(query.obsm):
        del query.obsm[key]
    return query


def dense(x) -> np.ndarray:
    """A dense float32 array of a (sparse) matrix."""
    from scipy import sparse

    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float32)


# --------------------------------------------------------------------------------------------------- scmulan


def code_fingerprint() -> str:
    """Short SHA-256 of scmulan's source files (the ``.py`` files of the imported package), for the model cache key."""
    import hashlib

    import scmulan

    digest = hashlib.sha256()
    root = Path(scmulan.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _model_dir(key: dict) -> Path:
    name = "-".join(f"{k}{v}" for k, v in key.items() if k not in ("fields", "tasks"))
    name += "-" + "+".join(t[:3] for t in key["tasks"])
    return MODELS / name.replace(" ", "")


def train_scmulan(
    ref,
    *,
    dataset: str,
    fields: Sequence[str],
    tasks: Sequence[str],
    config: str,
    epochs: int,
    seed: int,
    lr: float | None = None,
    batch_size: int = 32,
    device: str = "auto",
    retrain: bool = False,
    extra_key: dict | None = None,
    network: Sequence[tuple[str, object]] = (),
):
    """Train scmulan from scratch on ``ref`` (or load the model saved by an identical earlier run).

    Returns ``(model, info)``; ``info`` has ``train_seconds`` (of the run that trained it), ``cached`` and ``path``.
    """
    import scmulan

    key = {"data": dataset, **(extra_key or {}), "cfg": config, "ep": epochs, "lr": lr or "auto", "bs": batch_size}
    if network:  # only when given, so that the models saved before the option keep their keys
        key["net"] = dict(network)
    key.update(
        {"seed": seed, "n": ref.n_obs, "code": code_fingerprint(), "fields": tuple(fields), "tasks": tuple(tasks)}
    )
    path = _model_dir(key)
    info_file = path / "benchmark_info.json"
    scmulan.SCMULAN.setup_anndata(ref, **{f"{f}_key": f for f in fields})
    if not retrain and info_file.exists():
        info = json.loads(info_file.read_text())
        if info.get("key") == json.loads(json.dumps(key)):
            model = scmulan.SCMULAN.load(path, adata=ref)
            return model, {**info, "cached": True}
    model = scmulan.SCMULAN(ref, config=config, **dict(network))
    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs,
        tasks=tuple(tasks),
        lr=lr,
        batch_size=batch_size,
        train_size=1.0,
        seed=seed,
        accelerator=accelerator(device),
        enable_progress_bar=False,
    )
    seconds = time.perf_counter() - t0
    model.save(path, overwrite=True)
    info = {
        "key": json.loads(json.dumps(key)),
        "train_seconds": seconds,
        "parameters": int(model.module.num_parameters()),
        "path": str(path.relative_to(REPO)),
    }
    info_file.write_text(json.dumps(info, indent=1))
    return model, {**info, "cached": False}


def atlas_model(args, ref, seed: int):
    """The shared atlas model of one split seed (all three tasks, every atlas field registered)."""
    return train_scmulan(
        ref,
        dataset="atlas",
        fields=ATLAS_FIELDS,
        tasks=ALL_TASKS,
        config=args.config,
        epochs=args.epochs,
        seed=seed,
        lr=args.lr,
        batch_size=args.batch_size,
        device=args.device,
        retrain=args.retrain,
        extra_key={
            "c": args.atlas_cells,
            "g": args.atlas_genes,
            "as": args.atlas_seed,
            "ms": args.marker_strength,
            # only when changed, so that the keys of models saved before the option stay valid
            **({"bs": args.batch_strength} if getattr(args, "batch_strength", 1.0) != 1.0 else {}),
        },
        network=args.network,
    )


# --------------------------------------------------------------------------------------------------- peers


def logreg_fit(X_train: np.ndarray, y_train, *, C: float = 1.0, seed: int = 0):
    """CellTypist's recipe with scikit-learn: log-normalised input, z-scored per gene (clipped at ±10), then a
    multinomial L2 logistic regression. Returns a fitted pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    clip = FunctionTransformer(lambda z: np.clip(z, -10, 10))
    model = make_pipeline(StandardScaler(), clip, LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return model.fit(X_train, np.asarray(y_train, dtype=str))


def prior_corrected_predict(classifier, X_test: np.ndarray, y_train, tau: float) -> np.ndarray:
    """A fitted probabilistic classifier's labels after removing ``tau`` times the log frequency of each class among
    the training labels from its log-probabilities: the rule of scmulan's ``annotate(prior_correction=tau)``
    (post-hoc logit adjustment; ``tau=0`` is ``classifier.predict``), so a peer gets the same decision rule."""
    classes = np.asarray(classifier.classes_, dtype=str)
    if tau == 0:
        return classes[classifier.predict_proba(X_test).argmax(1)]
    y_train = np.asarray(y_train, dtype=str)
    log_freq = np.log(np.array([(y_train == c).mean() for c in classes]))
    log_p = np.log(np.clip(classifier.predict_proba(X_test), 1e-300, None))
    return classes[(log_p - tau * log_freq).argmax(1)]


def pca_fit(X_train: np.ndarray, n_comps: int = 50, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """``scanpy.pp.pca`` on the training cells (log-normalised); returns a projection for any cells."""
    import anndata as ad
    import scanpy as sc

    n_comps = min(n_comps, X_train.shape[0] - 1, X_train.shape[1] - 1)
    train = ad.AnnData(X_train.astype(np.float32))
    sc.pp.pca(train, n_comps=n_comps, zero_center=True, random_state=seed)
    loadings = np.asarray(train.varm["PCs"], dtype=np.float64)
    mean = X_train.mean(0, dtype=np.float64)
    return lambda X: ((np.asarray(X, dtype=np.float64) - mean) @ loadings).astype(np.float32)


def knn_pca_predict(X_train, y_train, X_test, *, n_comps: int = 50, k: int = 15, seed: int = 0) -> np.ndarray:
    """kNN (k=15, Euclidean) on a PCA fitted to the training cells."""
    from sklearn.neighbors import KNeighborsClassifier

    project = pca_fit(X_train, n_comps, seed)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(X_train)))
    knn.fit(project(X_train), np.asarray(y_train, dtype=str))
    return knn.predict(project(X_test))


def scvi_model(counts_adata, *, batch_key: str | None, epochs: int, seed: int, device: str = "auto", n_latent=10):
    """An ``scvi.model.SCVI`` trained on raw counts (``X``); ``batch_key`` is a column of ``obs`` or ``None``."""
    import scvi

    scvi.settings.seed = seed
    scvi.settings.progress_bar_style = "rich"
    scvi.model.SCVI.setup_anndata(counts_adata, batch_key=batch_key)
    model = scvi.model.SCVI(counts_adata, n_latent=n_latent)
    model.train(
        max_epochs=epochs,
        accelerator=accelerator(device),
        enable_progress_bar=False,
        early_stopping=False,
        logger=False,
        enable_model_summary=False,
    )
    return model


def scanvi_predict(
    counts_adata,
    train_idx,
    test_idx,
    label_keys: Sequence[str],
    *,
    scvi_epochs: int,
    scanvi_epochs: int,
    seed: int,
    device: str = "auto",
) -> tuple[dict[str, np.ndarray], float]:
    """scANVI as users run it for label transfer: SCVI on the counts of all cells (train + test, no labels), then
    per label level ``SCANVI.from_scvi_model`` with the test cells' labels hidden as ``"Unknown"``, ``predict()``.

    Returns the test predictions per label key and the seconds it took.
    """
    import scvi

    t0 = time.perf_counter()
    adata = counts_adata.copy()
    base = scvi_model(adata, batch_key=None, epochs=scvi_epochs, seed=seed, device=device)
    predictions = {}
    for key in label_keys:
        hidden = adata.obs[key].astype(str).to_numpy().copy()
        hidden[test_idx] = "Unknown"
        adata.obs["_label_hidden"] = hidden
        scvi.settings.seed = seed
        model = scvi.model.SCANVI.from_scvi_model(base, unlabeled_category="Unknown", labels_key="_label_hidden")
        model.train(
            max_epochs=scanvi_epochs,
            n_samples_per_label=100,
            accelerator=accelerator(device),
            enable_progress_bar=False,
            logger=False,
            enable_model_summary=False,
        )
        predictions[key] = np.asarray(model.predict(adata[test_idx]), dtype=str)
    return predictions, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------- metrics


def classification_scores(truth, pred) -> dict:
    """Accuracy, macro-F1 (the headline), weighted-F1 and per-class F1 (labels of ``truth``)."""
    from sklearn.metrics import accuracy_score, f1_score

    truth = np.asarray(truth, dtype=str)
    pred = np.asarray(pd_fill(pred), dtype=str)
    classes = np.unique(truth)
    per_class = f1_score(truth, pred, labels=classes, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(truth, pred, labels=classes, average="weighted", zero_division=0)),
        "per_class_f1": {c: float(v) for c, v in zip(classes, per_class, strict=True)},
    }


def pd_fill(values) -> np.ndarray:
    """Missing predictions (``None``/NaN) as the string ``"<none>"`` (always wrong)."""
    out = np.asarray(values, dtype=object)
    return np.array(["<none>" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in out])


def majority_predict(y_train, n: int) -> np.ndarray:
    """The most frequent training label, ``n`` times."""
    values, counts = np.unique(np.asarray(y_train, dtype=str), return_counts=True)
    return np.repeat(values[counts.argmax()], n)


def mean_sd(values: Sequence[float]) -> dict:
    """``{"mean", "sd", "n", "values"}`` (sample s.d., 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(np.nanmean(v)) if len(v) else float("nan"),
        "sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0,
        "n": len(v),
        "values": [float(x) for x in v],
    }


def aggregate(runs: Sequence[dict]) -> dict:
    """Mean ± s.d. over seeds of every numeric leaf of ``runs`` (dicts of the same shape)."""
    first = runs[0]
    out = {}
    for k, v in first.items():
        if isinstance(v, dict):
            out[k] = aggregate([r[k] for r in runs if k in r])
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = mean_sd([r[k] for r in runs if k in r])
    return out


def fmt(stat: dict | float | None, digits: int = 3) -> str:
    """``0.912 ± 0.013`` (or a plain number)."""
    if stat is None:
        return "–"
    if isinstance(stat, dict):
        if stat.get("n", 1) > 1:
            return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"
        return f"{stat['mean']:.{digits}f}"
    return f"{stat:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GitHub/MyST Markdown table; ``align``: one of ``l``/``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- report


def environment() -> dict:
    """Commit, machine and library versions."""
    import importlib.metadata as md

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    versions = {}
    for name in ("scmulan", "torch", "scanpy", "scvi-tools", "scikit-learn", "numpy", "anndata", "scib-metrics", "jax"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    import torch

    return {
        "commit": commit,
        "worktree_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        # the kernels torch dispatches to (AVX2, AVX512, ...): float32 results, and so trained models, differ with them
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min": os.getloadavg()[0],
        "versions": versions,
    }


def _cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_report(name: str, args, results: dict, started: float, out: str | None = None) -> Path:
    """Write ``{"command", "args", "environment", "wall_seconds", "results"}`` to ``benchmarks/results/<name>.json``."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": vars(args),
        "environment": _START_ENV or environment(),
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": sum(os.times()[:4]),  # user + system, this process and its children
        "results": results,
    }
    end = environment()
    if end["commit"] != report["environment"]["commit"]:
        report["commit_at_end"] = end["commit"]  # the repository moved on while this ran
    path.write_text(json.dumps(report, indent=1, default=_jsonable))
    print(f"wall time {report['wall_seconds']:.0f} s (CPU {report['cpu_seconds']:.0f} s); written {path}")
    return path


def _jsonable(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return str(x)


def log(msg: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
