"""Conditional generation quality: cells scmulan generates for a cell type vs held-out real cells of that type.

No peer in the scverse stack generates cells from metadata, so scmulan is read against two reference points made of
real cells, scored with exactly the same metrics and sample sizes:

- ``real_train`` (best case): real *training* cells of the requested type (from the half of the training cells the
  type classifier below does not learn from) — what a perfect generator would give
  (they differ from the held-out cells only by sampling);
- ``pool`` (no conditioning): cells drawn at random from the whole training pool, whatever their type — what a
  generator that ignores the condition would give at best;
- ``real_binned`` (quantisation alone): the ``real_train`` cells written as c-sentence levels (ten bins per cell)
  and read back through the model's de-binning table, as generated cells are. A generated cell can take at most
  ten values per gene; this row shows how much of the distance to real cells that quantisation alone causes, so that
  the gap between ``real_binned`` and ``scmulan`` is what the model itself gets wrong.

A good conditional generator sits near ``real_train``; one that ignores the condition sits near ``pool``.

Per split seed: the shared atlas model (trained on the stratified 80 % of ``scmulan.datasets.synthetic_atlas`` with
generation, annotation and metadata) generates ``--n-generated`` cells for every fine type that has at least 10
held-out and 20 training cells, conditioned on ``{"coarse_cell_type": …, "cell_type": …}`` (``model.generate``; ``X`` is
log-normalised by the model's de-binning table). Each set is compared with the held-out real cells of the same
type (log-normalised, all genes):

- ``mean_r``: Pearson r of per-gene means; ``own_margin``: ``mean_r`` minus the best r against the real means of any
  other type (> 0: the set is closest to its own type; ``benchmarks/learning.py``'s ``generation_fidelity``), and
  ``closest_own``: the fraction of types with margin > 0;
- ``zero_mae``: mean absolute difference of the per-gene fractions of zeros (0 = the same dropout pattern);
- ``mmd``: squared MMD (unbiased) with an RBF kernel whose bandwidth is the median pairwise distance of the real
  training cells (median heuristic; one bandwidth per split, so that every set is measured with the same kernel), and
  ``energy``: the energy distance, both in a 30-component PCA fitted on the real training cells;
- ``c2st_auroc``: classifier two-sample test — a random forest (100 trees) separating the real held-out cells of the
  type from the set, in the same PCA, 5-fold cross-validated AUROC (0.5 = indistinguishable, 1 = fully separable);
- ``type_accuracy``: a logistic regression trained on one half of the real training cells (fine labels, all genes;
  the ``real_train`` reference is drawn from the other half) labels the set; the fraction given the requested type (chance = 1 / number of types; on the held-out real cells themselves it
  reaches the ``classifier_ceiling`` reported alongside);
- ``genes_per_cell``: mean number of expressed genes per cell (real held-out cells: ``real_genes_per_cell``);
- ``between_type_r`` (a diagnostic, not a score): the mean r between the per-gene means of the sets made for two
  different types; near 1 when the sets do not depend on the requested type (``pool``), near the held-out real
  cells' own value (``real_between_type_r``) for a generator that follows the condition.

Metrics are averaged over types, then mean ± s.d. over seeds.

    python benchmarks/compare_generation.py                   # defaults: reuses the atlas models of the other scripts
    python benchmarks/compare_generation.py --seeds 0 1 2 3 4 --config small --epochs 100 --atlas-cells 10000 \\
        --device cuda --n-generated 200                   # the issue's 5 seeds, GPU
"""

from __future__ import annotations

import argparse
import time

import _compare as C
import numpy as np

SOURCES = ("scmulan", "real_binned", "real_train", "pool")
METRICS = (
    "mean_r",
    "own_margin",
    "closest_own",
    "zero_mae",
    "mmd",
    "energy",
    "c2st_auroc",
    "type_accuracy",
    "genes_per_cell",
)


def mmd_rbf(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased squared MMD with an RBF kernel of bandwidth ``sigma`` (the same for every set compared)."""
    from scipy.spatial.distance import cdist

    z = np.vstack([x, y])
    k = np.exp(-(cdist(z, z) ** 2) / (2 * max(sigma, 1e-12) ** 2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def median_distance(x: np.ndarray, seed: int, n: int = 1000) -> float:
    """Median pairwise distance of (up to ``n`` of) the rows of ``x``: the MMD bandwidth (median heuristic)."""
    from scipy.spatial.distance import pdist

    rows = np.random.default_rng(seed).permutation(len(x))[:n]
    return float(np.median(pdist(x[rows])))


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Euclidean; the within-sample terms exclude the diagonal)."""
    from scipy.spatial.distance import cdist

    n, m = len(x), len(y)
    dxy = cdist(x, y).mean()
    dxx = cdist(x, x).sum() / (n * (n - 1))
    dyy = cdist(y, y).sum() / (m * (m - 1))
    return float(2 * dxy - dxx - dyy)


def c2st_auroc(real: np.ndarray, other: np.ndarray, seed: int) -> float:
    """5-fold cross-validated AUROC of a random forest separating ``real`` from ``other``."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X = np.vstack([real, other])
    y = np.r_[np.zeros(len(real)), np.ones(len(other))]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    rf = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    p = cross_val_predict(rf, X, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def binned(cells: np.ndarray, table: np.ndarray, gene_ids: np.ndarray) -> np.ndarray:
    """Real cells through scmulan's per-cell binning and a de-binning table: what generated cells can look like."""
    from scmulan.sentence import expression_levels

    rows, cols = np.nonzero(cells > 0)
    values = cells[rows, cols]
    levels = expression_levels(values, cells.max(1)[rows])
    out = np.zeros_like(cells)
    out[rows, cols] = table[gene_ids[cols], levels]
    return out


def between_type_r(means: dict) -> float:
    """Mean Pearson r between the per-gene means of every pair of types (1: the types are indistinguishable)."""
    m = np.stack(list(means.values()))
    r = np.corrcoef(m)
    return float(r[np.triu_indices(len(m), 1)].mean())


def set_scores(
    cells: np.ndarray, real: np.ndarray, real_means: dict, t: str, project, classifier, seed: int, sigma: float
) -> dict:
    """Every metric of one set of cells (``cells``, log-normalised, cells x genes) against held-out real cells."""
    gm = cells.mean(0)
    r = {u: float(np.corrcoef(gm, m)[0, 1]) if gm.std() > 0 else 0.0 for u, m in real_means.items()}
    pc_cells, pc_real = project(cells), project(real)
    return {
        "mean_r": r[t],
        "own_margin": r[t] - max(v for u, v in r.items() if u != t),
        "closest_own": float(r[t] > max(v for u, v in r.items() if u != t)),
        "zero_mae": float(np.abs((cells == 0).mean(0) - (real == 0).mean(0)).mean()),
        "mmd": mmd_rbf(pc_cells, pc_real, sigma),
        "energy": energy_distance(pc_cells, pc_real),
        "c2st_auroc": c2st_auroc(pc_real, pc_cells, seed),
        "type_accuracy": float((classifier.predict(cells) == t).mean()),
        "genes_per_cell": float((cells > 0).sum(1).mean()),
    }


def run_split(args, data, seed: int) -> dict:
    """Generate for every type of one split and score scmulan and the two references."""
    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref, test = data[train_idx].copy(), data[test_idx].copy()
    X_train, X_test = C.dense(ref.X), C.dense(test.X)
    y_train = ref.obs["cell_type"].astype(str).to_numpy()
    y_test = test.obs["cell_type"].astype(str).to_numpy()
    coarse_of = dict(zip(ref.obs["cell_type"].astype(str), ref.obs["coarse_cell_type"].astype(str), strict=True))
    values, counts = np.unique(y_test, return_counts=True)
    types = [t for t, c in zip(values, counts, strict=True) if c >= 10 and (y_train == t).sum() >= 20]
    if not types:
        msg = f"seed {seed}: no cell type has 10 held-out and 20 training cells; use a larger atlas (--atlas-cells)"
        raise SystemExit(msg)

    C.log(f"seed {seed}: scmulan ({args.config}, {args.epochs} epochs)")
    model, info = C.atlas_model(args, ref, seed)
    t0 = time.perf_counter()
    conditions = {"coarse_cell_type": [coarse_of[t] for t in types], "cell_type": types}
    generated = model.generate(conditions, args.n_generated, seed=seed, device=args.device, progress=False)
    gen_seconds = time.perf_counter() - t0
    generated = generated[:, list(data.var_names)]  # the model's genes are the atlas's, in the same order
    X_gen = C.dense(generated.X)
    gen_types = generated.obs["cell_type"].astype(str).to_numpy()
    C.log(f"seed {seed}: generated {len(X_gen)} cells in {gen_seconds:.0f} s; scoring")

    project = C.pca_fit(X_train, 30, seed)
    sigma = median_distance(project(X_train), seed)
    # The type classifier learns from one half of the training cells; the `real_train` reference is drawn from the
    # other half, so that it is scored on cells the classifier never saw, like the generated ones.
    half_a, half_b = C.split(y_train, seed, test_size=0.5)
    classifier = C.logreg_fit(X_train[half_a], y_train[half_a], seed=seed)
    ceiling = float((classifier.predict(X_test) == y_test).mean())
    real_means = {t: X_test[y_test == t].mean(0) for t in types}
    gene_ids = model.vocab.token_ids("gene", list(data.var_names))
    rng = np.random.default_rng(seed)
    per_type = {s: {} for s in SOURCES}
    set_means = {s: {} for s in SOURCES}
    for t in types:
        real = X_test[y_test == t]
        own_train = half_b[y_train[half_b] == t]
        n = min(args.n_generated, len(own_train))
        real_train = X_train[rng.choice(own_train, n, replace=False)]
        sets = {
            "scmulan": X_gen[gen_types == t][:n],
            "real_binned": binned(real_train, model.debin_table_, gene_ids),
            "real_train": real_train,
            "pool": X_train[rng.choice(len(X_train), n, replace=False)],
        }
        for s, cells in sets.items():
            per_type[s][t] = set_scores(cells, real, real_means, t, project, classifier, seed, sigma)
            set_means[s][t] = cells.mean(0)
    scores = {s: {m: float(np.mean([v[m] for v in per_type[s].values()])) for m in METRICS} for s in SOURCES}
    for s in SOURCES:
        scores[s]["between_type_r"] = between_type_r(set_means[s])
    real_between = between_type_r(real_means)
    return {
        "seed": seed,
        "n_train": ref.n_obs,
        "n_test": test.n_obs,
        "types": types,
        "chance": 1.0 / len(types),
        "classifier_ceiling": ceiling,
        "real_genes_per_cell": float((X_test > 0).sum(1).mean()),
        "real_between_type_r": real_between,
        "mmd_bandwidth": sigma,
        "generation_seconds": gen_seconds,
        "ended_fraction": float(generated.obs["ended"].mean()),
        "scmulan_training": info,
        "scores": scores,
        "per_type": per_type,
    }


def print_table(summary: dict, runs: list[dict]) -> str:
    """Markdown table: one row per source."""
    names = {
        "mean_r": "mean r ↑",
        "own_margin": "own-type margin ↑",
        "closest_own": "closest own ↑",
        "zero_mae": "zero-frac. MAE ↓",
        "mmd": "MMD² ↓",
        "energy": "energy ↓",
        "c2st_auroc": "C2ST AUROC →0.5",
        "type_accuracy": "type acc. ↑",
        "genes_per_cell": "genes/cell",
    }
    rows = [[s, *(C.fmt(summary[s][m], 1 if m == "genes_per_cell" else 3) for m in METRICS)] for s in SOURCES]
    text = C.markdown_table(["cells", *(names[m] for m in METRICS)], rows)
    chance = np.mean([r["chance"] for r in runs])
    ceiling = np.mean([r["classifier_ceiling"] for r in runs])
    real_genes = np.mean([r["real_genes_per_cell"] for r in runs])
    between = {s: C.fmt(summary[s]["between_type_r"]) for s in SOURCES}
    real_between = np.mean([r["real_between_type_r"] for r in runs])
    text += (
        f"\n\n{len(runs[0]['types'])} types; type accuracy: chance {chance:.3f}, the classifier on held-out real cells "
        f"{ceiling:.3f}; real held-out cells express {real_genes:.1f} genes on average. Mean r between the sets made "
        f"for two different types: {', '.join(f'{s} {v}' for s, v in between.items())} (held-out real cells: "
        f"{real_between:.3f})."
    )
    text += "\n\nPer cell type (mean ± s.d. over the seeds where the type was scored):\n\n" + per_type_table(runs)
    print(text)
    return text


PER_TYPE = (
    ("mean_r", "mean r"),
    ("zero_mae", "zero-frac. MAE"),
    ("c2st_auroc", "C2ST AUROC"),
    ("type_accuracy", "type acc."),
)


def per_type_table(runs: list[dict]) -> str:
    """Markdown table: per requested type, the main metrics of scmulan, ``real_binned`` and ``real_train``."""
    types = sorted({t for r in runs for t in r["types"]})
    shown = {"scmulan": "scmulan", "real_binned": "binned", "real_train": "real"}
    header = ["cell type", *(f"{label} {name}" for _, label in PER_TYPE for name in shown.values())]
    rows = []
    for t in types:
        cells = [
            C.fmt(C.mean_sd([r["per_type"][s][t][m] for r in runs if t in r["per_type"][s]]), 2)
            for m, _ in PER_TYPE
            for s in shown
        ]
        rows.append([t, *cells])
    return C.markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser)
    parser.add_argument("--n-generated", type=int, default=40, help="cells per type (default: %(default)s)")
    args = parser.parse_args()
    started = time.perf_counter()
    C.setup_runtime(args.threads)
    data = C.load_atlas(args)
    runs = [run_split(args, data, seed) for seed in args.seeds]
    summary = {s: C.aggregate([r["scores"][s] for r in runs]) for s in SOURCES}
    results = {"n_cells": data.n_obs, "n_genes": data.n_vars, "runs": runs, "summary": summary}
    results["table_markdown"] = print_table(summary, runs)
    C.write_report("compare_generation", args, results, started, args.out)


if __name__ == "__main__":
    main()
