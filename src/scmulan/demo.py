"""The main job end to end, offline: ``python -m scmulan.demo`` (what ``make demo`` runs).

Trains a small model on 80 % of :func:`scmulan.datasets.pbmc68k` (stratified by cell type), annotates the held-out
20 % with coarse and fine labels and confidences, prints accuracy and macro-F1 against the truth and the
majority-class baseline, embeds the cells, saves a UMAP and a generated-vs-real figure, and writes the annotated
AnnData and the trained model.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger("scmulan.demo")


def _split(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_size, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def _scores(truth, pred) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    truth, pred = np.asarray(truth, dtype=str), np.asarray(pred, dtype=str)
    return accuracy_score(truth, pred), f1_score(truth, pred, average="macro")


def run(outdir: str | Path, *, epochs: int = 30, config: str = "tiny", seed: int = 0, quiet: bool = False) -> dict:
    """Run the demo; returns the scores.

    Parameters
    ----------
    outdir
        Where the figures, the annotated AnnData and the model go.
    epochs
        Training epochs.
    config
        Model size.
    seed
        Seed of the split and the training.
    quiet
        No progress bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    import scmulan

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sc.settings.figdir = outdir
    t0 = time.perf_counter()

    adata = scmulan.datasets.pbmc68k()
    print(
        f"[1/6] data: {adata.n_obs} PBMCs x {adata.n_vars} genes (raw counts), {adata.obs['cell_type'].nunique()} cell types"
    )
    scmulan.pp.prepare(adata)
    train_idx, test_idx = _split(adata.obs["cell_type"].to_numpy(), 0.2, seed)
    ref, query = adata[train_idx].copy(), adata[test_idx].copy()
    truth = query.obs[["coarse_cell_type", "cell_type"]].copy()
    query.obs = query.obs.drop(columns=["coarse_cell_type", "cell_type", "bulk_labels"], errors="ignore")
    print(f"[2/6] prepared (normalize_total 1e4 + log1p); {ref.n_obs} training cells, {query.n_obs} held-out cells")

    scmulan.SCMULAN.setup_anndata(
        ref,
        organ_key="organ",
        region_key="region",
        coarse_cell_type_key="coarse_cell_type",
        cell_type_key="cell_type",
        technology_key="technology",
    )
    model = scmulan.SCMULAN(ref, config=config)
    print(
        f"[3/6] training {model.config.n_layer}-layer model ({model.module.num_parameters():,} parameters), {epochs} epochs on CPU…"
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        model.train(
            max_epochs=epochs,
            tasks=("generation", "annotation"),
            train_size=0.9,  # the validation 10 % calibrates the confidence
            batch_size=32,
            seed=seed,
            enable_progress_bar=not quiet,
        )
    model.save(outdir / "model", overwrite=True)

    scmulan.tl.annotate(query, model, progress=not quiet)
    scores = {}
    for level, column, key in (("coarse", "coarse_cell_type", "scmulan_coarse"), ("fine", "cell_type", "scmulan_fine")):
        acc, f1 = _scores(truth[column], query.obs[key])
        majority = truth[column].value_counts(normalize=True).iloc[0]
        scores[level] = {"accuracy": acc, "macro_f1": f1, "majority_baseline": majority}
    print("[4/6] held-out annotation:")
    for level, s in scores.items():
        print(
            f"      {level:6s} accuracy {s['accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}  (majority baseline {s['majority_baseline']:.3f})"
        )
    low = (query.obs["scmulan_confidence"] < 0.5).mean()
    right = query.obs["scmulan_fine"].astype(str).to_numpy() == truth["cell_type"].astype(str).to_numpy()
    scores["fine"]["ece"] = scmulan.model.expected_calibration_error(query.obs["scmulan_confidence"], right)
    scores["fine"]["low_confidence_fraction"] = float(low)
    print(
        f"      {low:.1%} of cells have confidence < 0.5; expected calibration error of the (calibrated) confidence "
        f"{scores['fine']['ece']:.3f}"
    )

    query.obs["true_cell_type"] = truth["cell_type"].to_numpy()
    scmulan.pl.umap(
        query, color=["scmulan_fine", "true_cell_type"], wspace=0.6, show=False, save=str(outdir / "umap_scmulan.png")
    )
    print(f"[5/6] embedded (obsm['X_scmulan']); UMAP -> {outdir / 'umap_scmulan.png'}")

    types = list(ref.obs["cell_type"].value_counts().index[:4])
    generated = scmulan.tl.generate(model, {"cell_type": types}, n_cells=25, seed=seed, progress=not quiet)
    real = ref[ref.obs["cell_type"].isin(types)].copy()
    scmulan.pl.generated_vs_real(
        real, generated, groupby="cell_type", show=False, save=str(outdir / "generated_vs_real.png")
    )
    from scmulan._two_sample import generation_c2st

    auroc = generation_c2st(real, generated)  # the C2ST AUROC the figure prints in its UMAP title
    scores["generation"] = {"c2st_auroc": auroc, "genes_per_cell": float(generated.obs["n_genes"].mean())}
    real_genes = float((real.X > 0).sum(1).mean())
    print(
        f"[6/6] generated {generated.n_obs} cells of {len(types)} types; figure -> {outdir / 'generated_vs_real.png'}\n"
        f"      generated vs real: C2ST AUROC {auroc:.2f} (0.5: indistinguishable, 1: fully separable); genes per "
        f"cell {scores['generation']['genes_per_cell']:.0f} generated, {real_genes:.0f} real"
    )

    query.write_h5ad(outdir / "pbmc_query_annotated.h5ad")
    scores["provenance"] = provenance(epochs=epochs, config=config, seed=seed)
    (outdir / "scores.json").write_text(json.dumps(scores, indent=1))
    print(
        f"done in {time.perf_counter() - t0:.0f}s: {outdir / 'pbmc_query_annotated.h5ad'}, model in {outdir / 'model'}"
    )
    return scores


def provenance(**settings) -> dict:
    """Commit, machine, threads and versions of this run.

    Runs with the same settings, commit and thread count give the same figures: the network's initial weights, the
    split and the training draws are all seeded.
    """
    import platform

    import torch

    import scmulan

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        **settings,
        "commit": commit,
        "scmulan": scmulan.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "python": platform.python_version(),
    }


def table(scores: dict) -> str:
    """The README's table of a run's held-out annotation scores (Markdown), from its ``scores.json``."""
    p = scores["provenance"]
    rows = [
        "| 140 held-out cells | accuracy | macro-F1 | majority class |",
        "| --- | ---: | ---: | ---: |",
    ]
    for level, n in (("coarse", 6), ("fine", 10)):
        s = scores[level]
        rows.append(
            f"| {level} ({n} types) | {s['accuracy']:.3f} | {s['macro_f1']:.3f} | {s['majority_baseline']:.3f} |"
        )
    rows.append("")
    rows.append(
        f"Commit `{p['commit']}`, {p['config']} network, {p['epochs']} epochs, seed {p['seed']}, {p['threads']} torch "
        f"thread(s), torch {p['torch']}; expected calibration error of the fine confidence "
        f"{scores['fine']['ece']:.3f}; generated vs real C2ST AUROC {scores['generation']['c2st_auroc']:.2f}."
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m scmulan.demo [--outdir DIR] [--epochs N]``."""
    parser = argparse.ArgumentParser(prog="python -m scmulan.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", default="scmulan_demo_output", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    parser.add_argument(
        "--config", default="tiny", choices=("tiny", "small", "base"), help="model size (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    run(args.outdir, epochs=args.epochs, config=args.config, seed=args.seed, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
