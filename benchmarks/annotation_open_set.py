"""Confidence that means something: calibration, open-set detection and a 150-cell reference, next to logreg and kNN.

Per split seed of ``pbmc68k`` (80/20 stratified on the fine labels):

- **calibration**: scmulan trained on the reference with ``train_size=0.9`` (its 10 % validation cells calibrate it,
  as ``model.train`` does by default), then the held-out 20 %: expected calibration error of the raw path
  probability and of the calibrated confidence against fine-label correctness; the logistic regression's
  (CellTypist's recipe) highest class probability on the same cells. Each ECE comes with its floor, the expected ECE
  of a perfectly calibrated predictor with the same confidences on as many cells (on 140 cells it is 0.05-0.09), and
  the splits are also pooled. ``--calibration-model-dir`` loads models trained on all reference cells instead and
  calibrates each on half of the held-out cells, scoring the other half (2-fold).
- **open set**: for each ``--unseen`` type, every cell of that type is removed from the reference; the model
  trained on the rest annotates the held-out cells with ``open_set=True``. Reported: the fraction of the unseen
  type labelled ``"Unknown"`` (goal ≥ 0.8) and of the other types (goal ≤ 0.1). Peer: the logistic regression with
  its highest class probability thresholded at the 5 % quantile of its held-out reference cells (the same rule
  applied to the obvious baseline).
- **small reference**: 150 training cells (stratified), fine macro-F1 of scmulan, logreg and kNN on PCA on the same
  held-out cells.

    python benchmarks/annotation_open_set.py                       # tiny, seed 0, 30 epochs
    python benchmarks/annotation_open_set.py --config small --epochs 40 --seeds 0 1 2 3 4
    python benchmarks/annotation_open_set.py --seeds 0 1 2 3 4 --parts calibration \
        --calibration-model-dir "/tmp/models/small_default_s{seed}"      # models saved by annotation_ablation.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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


def ece_floor(confidence: np.ndarray, n_draws: int = 500, seed: int = 0) -> float:
    """Expected ECE of a perfectly calibrated predictor with these confidences on as many cells (sampling noise).

    Each draw makes every cell right with probability its confidence; an ECE measured on ``len(confidence)`` cells
    cannot be told from perfect calibration when it is near this value.
    """
    from scmulan.model import expected_calibration_error

    confidence = np.asarray(confidence, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = [expected_calibration_error(confidence, rng.random(len(confidence)) < confidence) for _ in range(n_draws)]
    return float(np.mean(draws))


def _cross_calibrated(model, test, seed: int) -> np.ndarray:
    """Calibrated confidence of every held-out cell, the map fitted on the other half of them (2-fold)."""
    half = np.random.default_rng(seed).permutation(test.n_obs) < test.n_obs // 2
    confidence = np.full(test.n_obs, np.nan)
    for fit in (half, ~half):
        model.calibrate(test[fit], device="cpu", seed=seed)
        confidence[~fit] = model.annotate(C.without_labels(test[~fit]), progress=False)["confidence"].to_numpy()
    return confidence


def calibration_split(data, args, seed: int) -> dict:
    """ECE of scmulan (raw and calibrated) and of logreg on one split, each with its sampling floor.

    With ``--calibration-model-dir`` the model trained on all reference cells is loaded and calibrated on half of the
    held-out cells, scored on the other half and the other way round (``model.calibrate(heldout)``); otherwise it
    trains with ``train_size=0.9`` and its validation cells calibrate it (what ``train()`` does).
    """
    from scmulan.model import expected_calibration_error

    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref, test = data[train_idx].copy(), data[test_idx].copy()
    truth = test.obs["cell_type"].astype(str).to_numpy()
    if args.calibration_model_dir:
        import scmulan

        scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
        model = scmulan.SCMULAN.load(args.calibration_model_dir.replace("{seed}", str(seed)), adata=ref)
        frame = model.annotate(C.without_labels(test), progress=False, calibrated=False)
        raw, calibrated = frame["confidence"].to_numpy(), _cross_calibrated(model, test, seed)
        protocol = "the other half of the held-out cells (2-fold)"
    else:
        model = _train(ref, args, seed)
        frame = model.annotate(C.without_labels(test), progress=False)
        raw, calibrated = frame["raw_confidence"].to_numpy(), frame["confidence"].to_numpy()
        protocol = "the validation cells"
    right = frame["fine"].astype(str).to_numpy() == truth
    pred, conf, _ = _logreg(ref, C.dense(ref.X), C.dense(test.X), seed)
    scores = C.classification_scores(truth, frame["fine"].astype(str).to_numpy())
    return {
        "seed": seed,
        "protocol": protocol,
        "scmulan_macro_f1": scores["macro_f1"],
        "scmulan_ece_raw": expected_calibration_error(raw, right),
        "scmulan_ece_calibrated": expected_calibration_error(calibrated, right),
        "scmulan_ece_calibrated_floor": ece_floor(calibrated),
        "logreg_ece": expected_calibration_error(conf, pred == truth),
        "logreg_ece_floor": ece_floor(conf),
        "logreg_macro_f1": C.classification_scores(truth, pred)["macro_f1"],
        # per cell, to pool the splits
        "cells": {
            "scmulan_raw": raw.tolist(),
            "scmulan_calibrated": calibrated.tolist(),
            "scmulan_right": right.tolist(),
            "logreg": conf.tolist(),
            "logreg_right": (pred == truth).tolist(),
        },
    }


def pooled_calibration(cal: list[dict]) -> dict:
    """ECE over the held-out cells of every split together (and its floor): less sampling noise than one split."""
    from scmulan.model import expected_calibration_error

    cells = {k: np.concatenate([np.asarray(r["cells"][k]) for r in cal]) for k in cal[0]["cells"]}
    return {
        "n_cells": len(cells["scmulan_right"]),
        "scmulan_ece_raw": expected_calibration_error(cells["scmulan_raw"], cells["scmulan_right"]),
        "scmulan_ece_calibrated": expected_calibration_error(cells["scmulan_calibrated"], cells["scmulan_right"]),
        "scmulan_ece_calibrated_floor": ece_floor(cells["scmulan_calibrated"]),
        "logreg_ece": expected_calibration_error(cells["logreg"], cells["logreg_right"]),
        "logreg_ece_floor": ece_floor(cells["logreg"]),
    }


def calibration_table(cal: list[dict]) -> str:
    """Per-split means and the pooled ECE, as Markdown."""
    pooled = pooled_calibration(cal)
    rows = [
        [
            "scmulan, raw path probability",
            _mean(cal, "scmulan_macro_f1"),
            _mean(cal, "scmulan_ece_raw"),
            "",
            f"{pooled['scmulan_ece_raw']:.3f}",
            "",
        ],
        [
            "scmulan, calibrated",
            _mean(cal, "scmulan_macro_f1"),
            _mean(cal, "scmulan_ece_calibrated"),
            _mean(cal, "scmulan_ece_calibrated_floor"),
            f"{pooled['scmulan_ece_calibrated']:.3f}",
            f"{pooled['scmulan_ece_calibrated_floor']:.3f}",
        ],
        [
            "logreg, highest class probability",
            _mean(cal, "logreg_macro_f1"),
            _mean(cal, "logreg_ece"),
            _mean(cal, "logreg_ece_floor"),
            f"{pooled['logreg_ece']:.3f}",
            f"{pooled['logreg_ece_floor']:.3f}",
        ],
    ]
    header = ["method", "macro-F1", "ECE per split", "floor", f"ECE pooled ({pooled['n_cells']} cells)", "floor"]
    text = f"Calibration (fine labels, held-out cells; calibrated on {cal[0]['protocol']}):\n\n"
    return text + C.markdown_table(header, rows)


def _open_set_model(ref, args, seed: int, unseen: str):
    """The model trained without ``unseen`` and its validation cells (loaded from ``--model-dir`` when saved there)."""
    import scmulan

    name = f"openset-{args.config}-ep{args.epochs}-seed{seed}-{unseen.replace(' ', '_').replace('+', 'p')}"
    path = None if args.model_dir is None else Path(args.model_dir) / name
    if path is not None and (path / "validation_indices.npy").exists():
        scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
        model = scmulan.SCMULAN.load(path, adata=ref)
        model.train_indices_ = np.load(path / "train_indices.npy")  # the reference cells, as after training
        return model, np.load(path / "validation_indices.npy"), model.train_indices_, None
    t0 = time.perf_counter()
    model = _train(ref, args, seed)
    seconds = time.perf_counter() - t0
    if path is not None:
        model.save(path, overwrite=True)
        np.save(path / "validation_indices.npy", np.asarray(model.validation_indices_))
        np.save(path / "train_indices.npy", np.asarray(model.train_indices_))
    return model, np.asarray(model.validation_indices_), np.asarray(model.train_indices_), seconds


def _union(scores: list[tuple[np.ndarray, np.ndarray]], target: float = 0.05) -> tuple[np.ndarray, float]:
    """Flag a test cell when any score passes its threshold; one quantile for all, the highest union rate on the
    validation cells that stays <= ``target``. Returns the test cells' flags and that quantile."""
    best = (None, 1.0)
    for q in np.linspace(0.95, 0.999, 50):
        val = np.zeros(len(scores[0][0]), bool)
        test = np.zeros(len(scores[0][1]), bool)
        for v, t in scores:
            thr = np.nanquantile(v, q)
            val |= v > thr
            test |= t > thr
        if val.mean() <= target:
            return test, float(q)
        best = (test, float(q))
    return best


def open_set_split(data, args, seed: int, unseen: str) -> dict:
    """Fraction of an unseen type flagged, and of the seen types, for every candidate score on ONE trained model and
    for thresholded logreg.

    Every score's threshold is its 95 % quantile on the model's validation cells (reference cells it did not
    train on), as ``open_set=True`` does. Scores: ``expression_knn`` (the default: mean distance to the 10 nearest
    reference cells in the reference's scaled principal components plus the residual), ``expression_knn_pcs_only``
    (the same without the residual coordinate), ``mahalanobis`` (the former default: annotation embedding to the
    nearest type centroid), ``embedding_knn`` (annotation embedding, 10 nearest reference cells), ``max_softmax``
    (1 - raw path probability), and ``union`` (expression_knn or embedding_knn, one quantile chosen so that at most
    5 % of validation cells are flagged).
    """
    from scmulan.model._novelty import knn_distance
    from scmulan.model._query import query_source

    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref = data[train_idx][data.obs["cell_type"].iloc[train_idx].astype(str).to_numpy() != unseen].copy()
    test = data[test_idx].copy()
    is_unseen = test.obs["cell_type"].astype(str).to_numpy() == unseen
    model, val_idx, fit_idx_model, train_seconds = _open_set_model(ref, args, seed, unseen)
    val = ref[val_idx].copy()
    query = C.without_labels(test)
    res = {"seed": seed, "unseen": unseen, "n_unseen": int(is_unseen.sum()), "n_validation": len(val_idx)}
    res["train_seconds"] = train_seconds
    flags = {}
    # the product path, both methods: calibrate on the validation cells, annotate with open_set=True
    for method in ("expression_knn", "mahalanobis"):
        model.calibrate(val, open_set_method=method, device="cpu")
        frame = model.annotate(query, progress=False, open_set=True, device="cpu")
        flags[method] = frame["fine"].astype(str).to_numpy() == "Unknown"
    cal = model.calibration_  # mahalanobis, the last one fitted; the expression space from a fresh calibration
    model.calibrate(val, device="cpu")
    space = model.calibration_["expression"]
    from scmulan.model._novelty import ExpressionSpace

    space = ExpressionSpace.from_dict(space)
    parts = model.parts()

    def coords(adata):
        src = query_source(parts, adata, context=False)
        return np.concatenate([space.project(x) for _, x, _ in _chunks(src, space)])

    val_c, test_c = coords(val), coords(query)
    ref_c = space.reference
    pcs = slice(0, ref_c.shape[1] - 1)
    knn_pcs = (
        knn_distance(val_c[:, pcs], ref_c[:, pcs], space.k),
        knn_distance(test_c[:, pcs], ref_c[:, pcs], space.k),
    )
    kw = {"progress": False, "device": "cpu", "calibrated": False, "return_embedding": True}
    fit_sub = np.setdiff1d(np.arange(ref.n_obs), val_idx)
    _, ref_emb = model.annotate(ref[fit_sub], **kw)
    val_frame, val_emb = model.annotate(val, **kw)
    test_frame, test_emb = model.annotate(query, **kw)
    emb_knn = (knn_distance(val_emb, ref_emb, 10), knn_distance(test_emb, ref_emb, 10))
    softmax = (1 - val_frame["confidence"].to_numpy(), 1 - test_frame["confidence"].to_numpy())
    for name, (v, t) in {"expression_knn_pcs_only": knn_pcs, "embedding_knn": emb_knn, "max_softmax": softmax}.items():
        flags[name] = t > np.nanquantile(v, 0.95)
    expr = (knn_distance(val_c, ref_c, space.k), knn_distance(test_c, ref_c, space.k))
    flags["union"], res["union_quantile"] = _union([expr, emb_knn])
    for name, flagged in flags.items():
        res[f"{name}_unseen_flagged"] = float(flagged[is_unseen].mean())
        res[f"{name}_seen_flagged"] = float(flagged[~is_unseen].mean())
    res["mahalanobis_threshold"] = cal["threshold"]
    res["expression_knn_threshold"] = model.calibration_["threshold"]
    # the same rule for logreg: its own held-out reference cells set the threshold (5 % flagged)
    rng = np.random.default_rng(seed)
    inner = rng.permutation(ref.n_obs)
    fit_idx, held_idx = inner[: int(0.9 * ref.n_obs)], inner[int(0.9 * ref.n_obs) :]
    X_ref = C.dense(ref.X)
    clf = C.logreg_fit(X_ref[fit_idx], ref.obs["cell_type"].astype(str).to_numpy()[fit_idx], seed=seed)
    threshold = np.quantile(clf.predict_proba(X_ref[held_idx]).max(1), 0.05)
    lr_flagged = clf.predict_proba(C.dense(test.X)).max(1) < threshold
    res["logreg_unseen_flagged"] = float(lr_flagged[is_unseen].mean())
    res["logreg_seen_flagged"] = float(lr_flagged[~is_unseen].mean())
    return res


def synthetic(seed: int) -> tuple[list[dict], list[dict]]:
    """The expression-space score on ``synthetic_atlas`` (1,200 cells, 100 genes, marker strength 2, technology
    effects at their default strength); no network is involved.

    - **left-out coarse type**: half the other cells are the reference, the other half set the threshold (95 %);
      fraction of the left-out type flagged, 10 components with and without the residual coordinate.
    - **batch shift**: for each technology, half its cells are the reference, the other half set the threshold, and
      the cells of the other technologies (every type seen) are scored.
    """
    import scmulan
    from scmulan.model._novelty import fit_expression_space, knn_distance
    from scmulan.sentence import CellSource

    design = {"n_genes": 100, "n_coarse_types": 3, "n_fine_per_coarse": 2, "n_coarse_markers": 8, "n_fine_markers": 4}
    atlas = scmulan.datasets.synthetic_atlas(n_cells=1200, seed=seed, marker_strength=2.0, **design)
    scmulan.pp.prepare(atlas)
    reg = atlas.copy()
    scmulan.SCMULAN.setup_anndata(reg, cell_type_key="cell_type")
    source = CellSource(atlas, scmulan.SCMULAN(reg, config="tiny").vocab)
    coarse = atlas.obs["coarse_cell_type"].astype(str).to_numpy()
    left_out = []
    for n_cells in (300, 1200):  # the first 300 cells: the size of the test suite's atlas
        for t in np.unique(coarse[:n_cells]):
            seen = np.random.default_rng(seed).permutation(np.flatnonzero(coarse[:n_cells] != t))
            ref_rows, held = np.sort(seen[: len(seen) // 2]), np.sort(seen[len(seen) // 2 :])
            space = fit_expression_space(source, ref_rows, n_components=10, seed=seed)
            row = {"seed": seed, "n_cells": n_cells, "left_out": t}
            for name, cols in (("with_residual", slice(None)), ("components_only", slice(0, -1))):
                ref_c = space.reference[:, cols]

                def score(rows, cols=cols, ref_c=ref_c, space=space):
                    x = np.concatenate([space.project(x) for _, x, _ in _chunks_rows(source, rows, space)])
                    return knn_distance(x[:, cols], ref_c, space.k)

                unseen = np.flatnonzero(coarse[:n_cells] == t)
                row[name] = float((score(unseen) > np.quantile(score(held), 0.95)).mean())
            left_out.append(row)
    tech = atlas.obs["technology"].astype(str).to_numpy()
    rows = []
    for t in np.unique(tech):
        same = np.random.default_rng(seed).permutation(np.flatnonzero(tech == t))
        ref_rows, held = np.sort(same[: len(same) // 2]), np.sort(same[len(same) // 2 :])
        space = fit_expression_space(source, ref_rows, seed=seed)
        threshold = np.quantile(space.score(source, held), 0.95)
        other = space.score(source, np.flatnonzero(tech != t))
        rows.append(
            {"seed": seed, "reference_technology": t, "other_technologies_flagged": float((other > threshold).mean())}
        )
    return left_out, rows


def _chunks_rows(source, rows, space):
    from scmulan.model._novelty import _chunks as chunks

    return chunks(source, rows, space.genes, 2048)


def _chunks(source, space):
    from scmulan.model._novelty import _chunks as chunks

    return chunks(source, np.arange(source.n_obs), space.genes, 2048)


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
    """Mean ± sample s.d. of ``key`` over ``rows``, as the other benchmarks write it."""
    return C.fmt(C.mean_sd([r[key] for r in rows]))


SCORES = {
    "expression_knn": "scmulan, expression kNN + residual (default)",
    "expression_knn_pcs_only": "scmulan, expression kNN, components only",
    "mahalanobis": "scmulan, embedding Mahalanobis (former default)",
    "embedding_knn": "scmulan, embedding kNN",
    "max_softmax": "scmulan, 1 - raw path probability",
    "union": "scmulan, expression kNN or embedding kNN",
    "logreg": "logreg, 1 - highest class probability",
}


def open_set_table(ope: list[dict]) -> str:
    """Fraction of the unseen type and of the seen types labelled Unknown, per score, as Markdown."""
    rows = []
    for unseen in dict.fromkeys(r["unseen"] for r in ope):
        sel = [r for r in ope if r["unseen"] == unseen]
        n = f"{np.mean([r['n_unseen'] for r in sel]):.0f}"
        for key, label in SCORES.items():
            if f"{key}_unseen_flagged" in sel[0]:
                rows.append([unseen, n, label, _mean(sel, f"{key}_unseen_flagged"), _mean(sel, f"{key}_seen_flagged")])
    text = "Open set (type left out of the reference; fraction labelled Unknown, threshold: 95 % of validation cells):"
    return text + "\n\n" + C.markdown_table(["unseen type", "cells", "score", "unseen flagged", "seen flagged"], rows)


def tables(res: dict) -> str:
    """The three tables as Markdown."""
    cal, ope, small = res["calibration"], res["open_set"], res["small_reference"]
    text = calibration_table(cal)
    text += "\n\n" + open_set_table(ope)
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
    parser.add_argument(
        "--parts", nargs="+", default=["calibration", "open_set", "small_reference"], help="also: synthetic"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--model-dir", default=None, help="save the open-set models here and reuse them when present")
    parser.add_argument(
        "--calibration-model-dir",
        default=None,
        help="calibration part: load the model of each split from this path ('{seed}' replaced; trained on all "
        "reference cells, e.g. annotation_ablation.py --save-dir) and calibrate it 2-fold on the held-out cells",
    )
    args = parser.parse_args()
    C.setup_runtime(args.threads)
    started = time.perf_counter()
    data = C.load_pbmc()
    res: dict = {"calibration": [], "open_set": [], "small_reference": []}
    if "synthetic" in args.parts:
        res["synthetic_open_set"], res["synthetic_batch_shift"] = [], []
        for seed in args.seeds:
            left_out, shift = synthetic(seed)
            res["synthetic_open_set"] += left_out
            res["synthetic_batch_shift"] += shift
        for row in res["synthetic_open_set"] + res["synthetic_batch_shift"]:
            C.log(f"synthetic atlas: {row}")
    for seed in args.seeds:
        if "calibration" in args.parts:
            res["calibration"].append(calibration_split(data, args, seed))
            C.log(f"seed {seed} calibration: { {k: v for k, v in res['calibration'][-1].items() if k != 'cells'} }")
        if "open_set" in args.parts:
            for unseen in args.unseen:
                res["open_set"].append(open_set_split(data, args, seed, unseen))
                C.log(f"seed {seed} open set: {res['open_set'][-1]}")
        if "small_reference" in args.parts:
            res["small_reference"].append(small_reference_split(data, args, seed))
            C.log(f"seed {seed} small reference: {res['small_reference'][-1]}")
    if all(res[k] for k in ("calibration", "open_set", "small_reference")):
        res["table_markdown"] = tables(res)
        print(res["table_markdown"])
    else:
        parts = [calibration_table(res["calibration"])] if res["calibration"] else []
        parts += [open_set_table(res["open_set"])] if res["open_set"] else []
        if parts:
            res["table_markdown"] = "\n\n".join(parts)
            print(res["table_markdown"])
    C.write_report("annotation_open_set", args, res, started, args.out)


if __name__ == "__main__":
    main()
