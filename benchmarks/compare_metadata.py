"""Metadata prediction (organ, region, sex, age, technology, disease) from expression: scmulan vs a logistic
regression on the same genes and the majority class.

Per split seed: the shared atlas model (trained on the stratified 80 % of ``scmulan.datasets.synthetic_atlas`` with
generation, annotation and metadata) predicts every field its metadata task was trained on
(``model.metadata_fields_``, decoded in that order, each step restricted to its field) for the held-out 20 %, whose
``obs`` is removed (genes only). Peers, one model per field: ``logreg`` (CellTypist's recipe: log-normalised, z-scored,
clipped, L2 multinomial logistic regression on all genes) and ``majority`` (the most frequent training category).
Metrics: accuracy and macro-F1 per field, mean ± s.d. over seeds, and hierarchical consistency — the fraction of
cells whose predicted region belongs to their predicted organ (the atlas's ``uns["synthetic_atlas"]
["organ_regions"]``).

    python benchmarks/compare_metadata.py                     # defaults: reuses the atlas models of the other scripts
    python benchmarks/compare_metadata.py --seeds 0 1 2 3 4 --config small --epochs 100 --atlas-cells 10000 \\
        --device cuda                   # the issue's 5 seeds, GPU
"""

from __future__ import annotations

import argparse
import time

import _compare as C
import numpy as np

METHODS = ("scmulan", "logreg", "majority")


def consistency(organs, regions, organ_regions: dict) -> float:
    """Fraction of cells whose region is one of their organ's regions."""
    ok = [str(r) in set(map(str, organ_regions.get(str(o), ()))) for o, r in zip(organs, regions, strict=True)]
    return float(np.mean(ok))


def run_split(args, data, seed: int) -> dict:
    """Every method on one split."""
    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref, test = data[train_idx].copy(), data[test_idx].copy()
    X_train, X_test = C.dense(ref.X), C.dense(test.X)

    C.log(f"seed {seed}: scmulan ({args.config}, {args.epochs} epochs)")
    model, info = C.atlas_model(args, ref, seed)
    fields = list(model.metadata_fields_)
    t0 = time.perf_counter()
    meta = model.predict_metadata(C.without_labels(test), fields, device=args.device, progress=False)
    preds = {"scmulan": {f: C.pd_fill(meta[f]) for f in fields}}
    seconds = {"scmulan": info["train_seconds"] + time.perf_counter() - t0}

    C.log(f"seed {seed}: logreg, majority over {fields}")
    t0 = time.perf_counter()
    preds["logreg"] = {f: C.logreg_fit(X_train, ref.obs[f].astype(str), seed=seed).predict(X_test) for f in fields}
    seconds["logreg"] = time.perf_counter() - t0
    preds["majority"] = {f: C.majority_predict(ref.obs[f].astype(str), test.n_obs) for f in fields}
    seconds["majority"] = 0.0

    organ_regions = data.uns["synthetic_atlas"]["organ_regions"]
    scores = {}
    for m, p in preds.items():
        scores[m] = {f: C.classification_scores(test.obs[f].astype(str), p[f]) for f in fields}
        if "organ" in p and "region" in p:
            scores[m]["region_in_organ"] = consistency(p["organ"], p["region"], organ_regions)
        scores[m]["seconds"] = seconds[m]
    return {
        "seed": seed,
        "fields": fields,
        "n_train": ref.n_obs,
        "n_test": test.n_obs,
        "scmulan_training": info,
        "scores": scores,
    }


def print_table(summary: dict, fields: list[str]) -> str:
    """Markdown table: one row per field, macro-F1 and accuracy per method."""
    header = ["field"] + [f"{m} {k}" for m in METHODS for k in ("macro-F1", "acc.")]
    rows = [[f, *(C.fmt(summary[m][f][k]) for m in METHODS for k in ("macro_f1", "accuracy"))] for f in fields]
    text = C.markdown_table(header, rows)
    if "region_in_organ" in summary["scmulan"]:
        text += "\n\nPredicted region inside the predicted organ: " + ", ".join(
            f"{m} {C.fmt(summary[m]['region_in_organ'])}" for m in METHODS
        )
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    C.setup_runtime(args.threads)
    data = C.load_atlas(args)
    runs = [run_split(args, data, seed) for seed in args.seeds]
    summary = {m: C.aggregate([r["scores"][m] for r in runs]) for m in METHODS}
    results = {"n_cells": data.n_obs, "n_genes": data.n_vars, "runs": runs, "summary": summary}
    results["table_markdown"] = print_table(summary, runs[0]["fields"])
    C.write_report("compare_metadata", args, results, started, args.out)


if __name__ == "__main__":
    main()
