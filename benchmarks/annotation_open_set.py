"""Confidence that means something: calibration, open-set detection and a 150-cell reference, next to logreg and kNN.

Per split seed of ``pbmc68k`` (80/20 stratified on the fine labels):

- **calibration**: scmulan trained on the reference with ``train_size=0.9`` (its 10 % validation cells calibrate it,
  as ``model.train`` does by default), then the held-out 20 %: expected calibration error of the raw path
  probability and of the calibrated confidence against fine-label correctness; the logistic regression's
  (CellTypist's recipe) highest class probability on the same cells.
- **open set**: for each ``--unseen`` type, every cell of that type is removed from the reference; the model
  trained on the rest annotates the held-out cells with ``open_set=True``. Reported: the fraction of the unseen
  type labelled ``"Unknown"`` (goal ≥ 0.8) and of the other types (goal ≤ 0.1). Peer: the logistic regression with
  its highest class probability thresholded at the 5 % quantile of its held-out reference cells (the same rule
  applied to the obvious baseline).
- **small reference**: 150 training cells (stratified), fine macro-F1 of scmulan, logreg and kNN on PCA on the same
  held-out cells.

    python benchmarks/annotation_open_set.py                       # tiny, seed 0, 30 epochs
    python benchmarks/annotation_open_set.py --config small --epochs 40 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import time

import _compare as C
import numpy as np


def _train(ref, args, seed: int, *, train_size: float = 0.9):
    import scmulan

    scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN(ref, config=args.config, seed=seed)
    model.train(max_epochs=args.epochs, train_size=train_size, seed=seed, accelerator="cpu", enable_progress_bar=False)
    return model


def _logreg(ref, X_train, X_test, seed):
    clf = C.logreg_fit(X_train, ref.obs["cell_type"].astype(str).to_numpy(), seed=seed)
    proba = clf.predict_proba(X_test)
    return clf.classes_[proba.argmax(1)], proba.max(1), clf


def calibration_split(data, args, seed: int) -> dict:
    """ECE of scmulan (raw and calibrated) and of logreg on one split."""
    from scmulan.model import expected_calibration_error

    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref, test = data[train_idx].copy(), data[test_idx].copy()
    truth = test.obs["cell_type"].astype(str).to_numpy()
    model = _train(ref, args, seed)
    frame = model.annotate(C.without_labels(test), progress=False)
    right = frame["fine"].astype(str).to_numpy() == truth
    pred, conf, _ = _logreg(ref, C.dense(ref.X), C.dense(test.X), seed)
    scores = C.classification_scores(truth, frame["fine"].astype(str).to_numpy())
    return {
        "seed": seed,
        "scmulan_macro_f1": scores["macro_f1"],
        "scmulan_ece_raw": expected_calibration_error(frame["raw_confidence"], right),
        "scmulan_ece_calibrated": expected_calibration_error(frame["confidence"], right),
        "scmulan_ece_validation_in_sample": model.calibration_["ece_after"],
        "logreg_ece": expected_calibration_error(conf, pred == truth),
        "logreg_macro_f1": C.classification_scores(truth, pred)["macro_f1"],
    }


def open_set_split(data, args, seed: int, unseen: str) -> dict:
    """Fraction of an unseen type flagged, and of the seen types, for scmulan and thresholded logreg."""
    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref = data[train_idx][data.obs["cell_type"].iloc[train_idx].astype(str).to_numpy() != unseen].copy()
    test = data[test_idx].copy()
    is_unseen = test.obs["cell_type"].astype(str).to_numpy() == unseen
    model = _train(ref, args, seed)
    frame = model.annotate(C.without_labels(test), progress=False, open_set=True)
    flagged = frame["fine"].astype(str).to_numpy() == "Unknown"
    # the same rule for logreg: its own held-out reference cells set the threshold (5 % flagged)
    rng = np.random.default_rng(seed)
    inner = rng.permutation(ref.n_obs)
    fit_idx, held_idx = inner[: int(0.9 * ref.n_obs)], inner[int(0.9 * ref.n_obs) :]
    X_ref = C.dense(ref.X)
    clf = C.logreg_fit(X_ref[fit_idx], ref.obs["cell_type"].astype(str).to_numpy()[fit_idx], seed=seed)
    threshold = np.quantile(clf.predict_proba(X_ref[held_idx]).max(1), 0.05)
    lr_flagged = clf.predict_proba(C.dense(test.X)).max(1) < threshold
    return {
        "seed": seed,
        "unseen": unseen,
        "n_unseen": int(is_unseen.sum()),
        "scmulan_unseen_flagged": float(flagged[is_unseen].mean()),
        "scmulan_seen_flagged": float(flagged[~is_unseen].mean()),
        "logreg_unseen_flagged": float(lr_flagged[is_unseen].mean()),
        "logreg_seen_flagged": float(lr_flagged[~is_unseen].mean()),
    }


def small_reference_split(data, args, seed: int, n_cells: int = 150) -> dict:
    """Fine macro-F1 with a 150-cell reference."""
    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    frac = n_cells / len(train_idx)
    keep, _ = C.split(data.obs["cell_type"].iloc[train_idx], seed, test_size=1 - frac)
    ref, test = data[train_idx[keep]].copy(), data[test_idx].copy()
    truth = test.obs["cell_type"].astype(str).to_numpy()
    model = _train(ref, args, seed, train_size=1.0)
    frame = model.annotate(C.without_labels(test), progress=False)
    X_train, X_test, y = C.dense(ref.X), C.dense(test.X), ref.obs["cell_type"].astype(str).to_numpy()
    return {
        "seed": seed,
        "n_train": ref.n_obs,
        "scmulan": C.classification_scores(truth, frame["fine"].astype(str).to_numpy())["macro_f1"],
        "logreg": C.classification_scores(truth, C.logreg_fit(X_train, y, seed=seed).predict(X_test))["macro_f1"],
        "knn_pca": C.classification_scores(truth, C.knn_pca_predict(X_train, y, X_test, seed=seed))["macro_f1"],
    }


def _mean(rows: list[dict], key: str) -> str:
    v = [r[key] for r in rows]
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def tables(res: dict) -> str:
    """The three tables as Markdown."""
    cal, ope, small = res["calibration"], res["open_set"], res["small_reference"]
    text = "Calibration (fine labels, held-out cells):\n\n"
    text += C.markdown_table(
        ["method", "macro-F1", "ECE"],
        [
            ["scmulan, raw path probability", _mean(cal, "scmulan_macro_f1"), _mean(cal, "scmulan_ece_raw")],
            ["scmulan, calibrated", _mean(cal, "scmulan_macro_f1"), _mean(cal, "scmulan_ece_calibrated")],
            ["logreg, highest class probability", _mean(cal, "logreg_macro_f1"), _mean(cal, "logreg_ece")],
        ],
    )
    rows = []
    for unseen in dict.fromkeys(r["unseen"] for r in ope):
        sel = [r for r in ope if r["unseen"] == unseen]
        rows.append(
            [
                unseen,
                f"{np.mean([r['n_unseen'] for r in sel]):.0f}",
                _mean(sel, "scmulan_unseen_flagged"),
                _mean(sel, "scmulan_seen_flagged"),
                _mean(sel, "logreg_unseen_flagged"),
                _mean(sel, "logreg_seen_flagged"),
            ]
        )
    text += "\n\nOpen set (type left out of the reference; fraction labelled Unknown):\n\n"
    text += C.markdown_table(
        ["unseen type", "cells", "scmulan: unseen", "scmulan: seen", "logreg: unseen", "logreg: seen"], rows
    )
    text += f"\n\nSmall reference ({small[0]['n_train']} training cells), fine macro-F1:\n\n"
    text += C.markdown_table(
        ["scmulan", "logreg", "knn_pca"], [[_mean(small, "scmulan"), _mean(small, "logreg"), _mean(small, "knn_pca")]]
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--unseen", nargs="+", default=["CD14+ Monocyte", "CD19+ B"])
    parser.add_argument("--parts", nargs="+", default=["calibration", "open_set", "small_reference"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    C.setup_runtime(args.threads)
    started = time.perf_counter()
    data = C.load_pbmc()
    res: dict = {"calibration": [], "open_set": [], "small_reference": []}
    for seed in args.seeds:
        if "calibration" in args.parts:
            res["calibration"].append(calibration_split(data, args, seed))
            C.log(f"seed {seed} calibration: {res['calibration'][-1]}")
        if "open_set" in args.parts:
            for unseen in args.unseen:
                res["open_set"].append(open_set_split(data, args, seed, unseen))
                C.log(f"seed {seed} open set: {res['open_set'][-1]}")
        if "small_reference" in args.parts:
            res["small_reference"].append(small_reference_split(data, args, seed))
            C.log(f"seed {seed} small reference: {res['small_reference'][-1]}")
    if all(res.values()):
        res["table_markdown"] = tables(res)
        print(res["table_markdown"])
    C.write_report("annotation_open_set", args, res, started, args.out)


if __name__ == "__main__":
    main()
