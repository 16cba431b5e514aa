"""Evidence that the multitask objective learns: held-out annotation, metadata and generation after CPU pretraining.

Synthetic atlas: pre-train on 85 % of `scmulan.datasets.synthetic_atlas` with all three tasks, then on the held-out
15 % report coarse/fine annotation and organ/region prediction (accuracy, macro-F1, majority baseline), and for
generation, whether cells generated for a cell type are closer (Pearson r of per-gene means) to real held-out cells
of that type than to any other type. PBMC: train on a stratified 80 % of `scmulan.datasets.pbmc68k` (generation +
annotation), annotate the other 20 %.

    python benchmarks/learning.py                      # both, tiny config
    python benchmarks/learning.py --config small --epochs 20 --only pbmc
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def _score(truth, pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    truth, pred = np.asarray(truth, dtype=str), np.asarray(pred, dtype=str)
    values, counts = np.unique(truth, return_counts=True)
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro")),
        "majority": float(counts.max() / counts.sum()),
    }


def generation_fidelity(model, real, key: str = "cell_type", n_cells: int = 30, seed: int = 0) -> dict[str, float]:
    """Per cell type: r(generated means, real means of the same type) vs the best r against another type."""
    types = [t for t in real.obs[key].value_counts().index if (real.obs[key] == t).sum() >= 5]
    generated = model.generate({key: types}, n_cells, seed=seed, progress=False)
    genes = list(generated.var_names.intersection(real.var_names))
    real_means = {t: np.asarray(real[real.obs[key] == t, genes].X.mean(0)).ravel() for t in types}
    margins, own = [], []
    for t in types:
        g = np.asarray(generated[generated.obs[key] == t, genes].X.mean(0)).ravel()
        r = {u: np.corrcoef(g, m)[0, 1] for u, m in real_means.items()}
        own.append(r[t])
        margins.append(r[t] - max(v for u, v in r.items() if u != t))
    return {
        "n_types": len(types),
        "fraction_closest_to_own_type": float(np.mean(np.array(margins) > 0)),
        "mean_r_own_type": float(np.mean(own)),
        "mean_margin": float(np.mean(margins)),
        "mean_genes_per_generated_cell": float(generated.obs["n_genes"].mean()),
    }


def atlas(
    config: str,
    epochs: int,
    lr: float,
    seed: int,
    n_cells: int,
    n_genes: int,
    marker_strength: float = 1.0,
    metadata_strength: float = 1.0,
) -> dict:
    """Pre-train on the synthetic atlas and evaluate on held-out cells."""
    import scmulan

    data = scmulan.datasets.synthetic_atlas(
        n_cells=n_cells,
        n_genes=n_genes,
        marker_strength=marker_strength,
        metadata_strength=metadata_strength,
        seed=seed,
    )
    scmulan.pp.prepare(data)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(data.n_obs)
    n_train = int(0.85 * data.n_obs)
    ref, test = data[np.sort(perm[:n_train])].copy(), data[np.sort(perm[n_train:])].copy()
    fields = ["organ", "region", "coarse_cell_type", "cell_type", "sex", "age", "technology", "disease"]
    scmulan.SCMULAN.setup_anndata(ref, **{f"{f}_key": f for f in fields})
    model = scmulan.SCMULAN(ref, config=config)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, lr=lr, batch_size=32, train_size=1.0, seed=seed, enable_progress_bar=False)
    train_s = time.perf_counter() - t0
    query = test.copy()
    query.obs = query.obs[[]]  # the query has no labels: the model sees genes only
    labels = model.annotate(query, progress=False)
    meta = model.predict_metadata(query, ["organ", "region"], progress=False)
    return {
        "config": config,
        "epochs": epochs,
        "marker_strength": marker_strength,
        "metadata_strength": metadata_strength,
        "train_cells": ref.n_obs,
        "test_cells": test.n_obs,
        "train_seconds": train_s,
        "coarse": _score(test.obs["coarse_cell_type"], labels["coarse"]),
        "fine": _score(test.obs["cell_type"], labels["fine"]),
        "organ": _score(test.obs["organ"], meta["organ"]),
        "region": _score(test.obs["region"], meta["region"]),
        "generation": generation_fidelity(model, test, seed=seed),
        "generation_coarse": generation_fidelity(model, test, key="coarse_cell_type", n_cells=40, seed=seed),
    }


def pbmc(config: str, epochs: int, lr: float, seed: int) -> dict:
    """Train on 80 % of the PBMCs (stratified), annotate the other 20 %."""
    from sklearn.model_selection import train_test_split

    import scmulan

    data = scmulan.datasets.pbmc68k()
    scmulan.pp.prepare(data)
    idx = np.arange(data.n_obs)
    tr, te = train_test_split(idx, test_size=0.2, stratify=data.obs["cell_type"], random_state=seed)
    ref, test = data[np.sort(tr)].copy(), data[np.sort(te)].copy()
    scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN(ref, config=config)
    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs,
        tasks=("generation", "annotation"),
        lr=lr,
        batch_size=32,
        train_size=1.0,
        seed=seed,
        enable_progress_bar=False,
    )
    train_s = time.perf_counter() - t0
    query = test.copy()
    query.obs = query.obs[[]]
    labels = model.annotate(query, progress=False)
    return {
        "config": config,
        "epochs": epochs,
        "train_cells": ref.n_obs,
        "test_cells": test.n_obs,
        "train_seconds": train_s,
        "coarse": _score(test.obs["coarse_cell_type"], labels["coarse"]),
        "fine": _score(test.obs["cell_type"], labels["fine"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--epochs", type=int, default=None, help="default: 12 (atlas), 30 (pbmc)")
    parser.add_argument("--lr", type=float, default=None, help="default: by model width (see SCMULAN.train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--marker-strength", type=float, default=1.0, help="synthetic_atlas marker_strength")
    parser.add_argument("--metadata-strength", type=float, default=1.0, help="synthetic_atlas metadata_strength")
    parser.add_argument("--only", choices=["atlas", "pbmc"], default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/learning.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    results = {}
    if args.only in (None, "atlas"):
        results["atlas"] = atlas(
            args.config,
            args.epochs or 12,
            args.lr,
            args.seed,
            args.cells,
            args.genes,
            args.marker_strength,
            args.metadata_strength,
        )
    if args.only in (None, "pbmc"):
        results["pbmc"] = pbmc(args.config, args.epochs or 30, args.lr, args.seed)
    for name, r in results.items():
        print(
            f"== {name}: {r['config']}, {r['epochs']} epochs, {r['train_cells']} train / {r['test_cells']} test cells, "
            f"trained in {r['train_seconds']:.0f}s"
        )
        for key in ("coarse", "fine", "organ", "region"):
            if key in r:
                s = r[key]
                print(
                    f"   {key:7s} accuracy {s['accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}  majority {s['majority']:.3f}"
                )
        for level in ("generation", "generation_coarse"):
            if level in r:
                g = r[level]
                print(
                    f"   {level}: {g['fraction_closest_to_own_type']:.2f} of {g['n_types']} types closest to their own "
                    f"type (mean r {g['mean_r_own_type']:.3f}, margin {g['mean_margin']:+.3f}, "
                    f"{g['mean_genes_per_generated_cell']:.0f} genes/cell)"
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
