"""Conditional generation quality: cells generated for a cell type vs held-out real cells of that type, with baselines.

Per split seed, the real cells are split 80/20 (stratified by fine type). Every fine type with at least
``--min-train`` training cells and 10 held-out cells is scored. Each source gives ``n`` cells per type
(``n = min(--n-generated, training cells of the type in the classifier's other half)``), all scored against the
held-out real cells of the type with the same metrics:

- ``scmulan``: ``model.generate({"coarse_cell_type": …, "cell_type": …})`` of a model trained from scratch on the
  training cells (generation + annotation; ``--objective next`` (default, new models) or ``set`` (the seed's
  objective, sampled with the original's ``gamma=0.1``)); ``X`` de-binned to log-normalised values;
- ``independent`` (the floor any model must beat): per type, every gene expressed independently with its
  training frequency in the type, at a value drawn from its expressed values in the type;
- ``scvi``: scVI (scvi-tools) trained on the training counts with the fine type as the batch covariate; cells are
  decoded from ``z ~ N(0, I)`` with the type's batch index and a library size drawn from the type's training cells,
  counts sampled from the decoder's ZINB, then normalised and log1p-transformed as the data;
- ``real_train`` (the real-vs-real floor): real training cells of the type (never seen by the type classifier).

Metrics (per type, then averaged over types; mean ± s.d. over seeds):

- ``c2st``: classifier two-sample test, a logistic regression on 30 PCs of the real training cells separating the
  held-out real cells of the type from the set, 5-fold AUROC (0.5: indistinguishable);
- ``mmd`` (RBF, median-heuristic bandwidth) and ``energy`` distance in the same PCA;
- ``genes_ratio``: mean expressed genes per cell of the set / of the held-out real cells (1 is right);
- ``mean_r``, ``var_r``: Pearson r of the per-gene means / variances with the held-out real cells; ``mean_bias``:
  mean over genes of the difference of means (log units; 0: no systematic bias); ``zero_mae``: mean absolute
  difference of the per-gene zero fractions;
- ``corr_r``: gene–gene correlation agreement, Pearson r between the upper triangles of the correlation matrices of
  the type's 50 most expressed genes (real held-out vs the set);
- ``type_acc``: a logistic regression trained on half of the real training cells labels the set: the fraction given
  the requested type;
- ``de_r``, ``de_slope``: differential expression recovery, per type the log-fold changes (difference of mean
  log-expression) of the type vs all other scored types computed within the set's source, against the same in the
  held-out real cells: Pearson r across genes and the regression slope (< 1: attenuated).

    python benchmarks/compare_generation.py --data pbmc --config small --epochs 40 --seeds 0 1 2 3 4   # the issue
    python benchmarks/compare_generation.py --data pbmc --config tiny --epochs 30 --seeds 0             # CPU check

Decoding sweeps on one trained model per split: ``--model-dir DIR`` loads the split's model (``{seed}`` in ``DIR``
is replaced by the split seed; e.g. a model this script saved under ``benchmarks/results/models/``) instead of
training one, and ``--sampling`` scores scmulan once per sampling setting (one source ``scmulan <setting>`` each):

    python benchmarks/compare_generation.py --seeds 0 --model-dir /tmp/models/s{seed} --sources scmulan real_train \
        --sampling default guidance=1,gene_counts=model top_p=0.95
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _compare as C
import numpy as np

SOURCES = ("scmulan", "independent", "scvi", "real_train")
METRICS = (
    "c2st",
    "mmd",
    "energy",
    "genes_ratio",
    "genes_sd_ratio",
    "mean_r",
    "mean_bias",
    "var_r",
    "zero_mae",
    "corr_r",
    "type_acc",
    "de_r",
    "de_slope",
)
NAMES = {
    "c2st": "C2ST AUROC →0.5",
    "mmd": "MMD² ↓",
    "energy": "energy ↓",
    "genes_ratio": "genes/cell ratio →1",
    "genes_sd_ratio": "genes/cell s.d. ratio →1",
    "mean_r": "mean r ↑",
    "mean_bias": "mean bias →0",
    "var_r": "var. r ↑",
    "zero_mae": "zero-frac. MAE ↓",
    "corr_r": "gene-gene corr. r ↑",
    "type_acc": "type acc. ↑",
    "de_r": "DE LFC r ↑",
    "de_slope": "DE slope →1",
}


# --------------------------------------------------------------------------------------------------- metrics


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
    return float(2 * cdist(x, y).mean() - cdist(x, x).sum() / (n * (n - 1)) - cdist(y, y).sum() / (m * (m - 1)))


def c2st_auroc(real: np.ndarray, other: np.ndarray, seed: int) -> float:
    """5-fold cross-validated AUROC of a logistic regression separating ``real`` from ``other`` (PCA space)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.vstack([real, other])
    y = np.r_[np.zeros(len(real)), np.ones(len(other))]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    p = cross_val_predict(clf, X, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def _r(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return 0.0
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def corr_agreement(cells: np.ndarray, real: np.ndarray, n_genes: int = 50) -> float:
    """Pearson r between the gene–gene correlations of ``cells`` and ``real`` over the real cells' top genes."""
    top = np.argsort(-real.mean(0))[:n_genes]
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = np.corrcoef(cells[:, top].T), np.corrcoef(real[:, top].T)
    iu = np.triu_indices(len(top), 1)
    return _r(np.nan_to_num(a[iu]), np.nan_to_num(b[iu]))


def set_scores(cells: np.ndarray, real: np.ndarray, t: str, project, classifier, seed: int, sigma: float) -> dict:
    """The per-set metrics of one set of cells (log-normalised, cells × genes) against held-out real cells."""
    pc_cells, pc_real = project(cells), project(real)
    gm, rm = cells.mean(0), real.mean(0)
    return {
        "c2st": c2st_auroc(pc_real, pc_cells, seed),
        "mmd": mmd_rbf(pc_cells, pc_real, sigma),
        "energy": energy_distance(pc_cells, pc_real),
        "genes_ratio": float((cells > 0).sum(1).mean() / max((real > 0).sum(1).mean(), 1e-9)),
        "genes_sd_ratio": float((cells > 0).sum(1).std() / max((real > 0).sum(1).std(), 1e-9)),
        "mean_r": _r(gm, rm),
        "mean_bias": float((gm - rm).mean()),
        "var_r": _r(cells.var(0), real.var(0)),
        "zero_mae": float(np.abs((cells == 0).mean(0) - (real == 0).mean(0)).mean()),
        "corr_r": corr_agreement(cells, real),
        "type_acc": float((classifier.predict(cells) == t).mean()),
    }


def de_scores(sets: dict, real_sets: dict) -> dict:
    """Per type, LFC of the type vs the other types within a source against the same in the held-out real cells."""
    out = {}
    for t in sets:
        others = [u for u in sets if u != t]
        lfc = sets[t].mean(0) - np.vstack([sets[u] for u in others]).mean(0)
        real_lfc = real_sets[t].mean(0) - np.vstack([real_sets[u] for u in others]).mean(0)
        slope = float(np.polyfit(real_lfc, lfc, 1)[0]) if np.ptp(real_lfc) > 0 else 0.0
        out[t] = {"de_r": _r(lfc, real_lfc), "de_slope": slope}
    return out


# --------------------------------------------------------------------------------------------------- baselines


def independent_cells(X_type: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each gene independently expressed with its frequency in ``X_type``, at one of its expressed values there."""
    nz = (X_type > 0).sum(0)  # (G,)
    on = rng.random((n, X_type.shape[1])) < nz / len(X_type)
    ordered = -np.sort(-X_type, axis=0)  # each column's expressed values first
    pick = np.floor(rng.random((n, X_type.shape[1])) * np.maximum(nz, 1)).astype(int)
    values = np.take_along_axis(ordered, pick, axis=0)
    return np.where(on, values, 0.0).astype(np.float32)


def scvi_sampler(counts_train, labels: np.ndarray, args, seed: int):
    """scVI with the fine type as batch covariate; returns ``sample(type, n, rng) -> log-normalised cells``."""
    import anndata as ad
    import torch

    adata = ad.AnnData(counts_train.astype(np.float32))
    adata.obs["cell_type"] = labels.astype(str)
    model = C.scvi_model(adata, batch_key="cell_type", epochs=args.scvi_epochs, seed=seed, device=args.device)
    module = model.module.cpu().eval()
    categories = list(model.adata_manager.get_state_registry("batch").categorical_mapping)
    library = np.asarray(counts_train.sum(1)).ravel()

    def sample(t: str, n: int, rng: np.random.Generator) -> np.ndarray:
        lib = rng.choice(library[labels == t], n)
        torch.manual_seed(int(rng.integers(2**31)))
        with torch.no_grad():
            z = torch.randn(n, module.n_latent)
            batch = torch.full((n, 1), categories.index(t), dtype=torch.long)
            out = module.generative(
                z=z, library=torch.log(torch.as_tensor(lib, dtype=torch.float32))[:, None], batch_index=batch
            )
            counts = out["px"].sample().numpy()
        total = np.maximum(counts.sum(1, keepdims=True), 1)
        return np.log1p(counts / total * 1e4).astype(np.float32)

    return sample


# --------------------------------------------------------------------------------------------------- scmulan


def train_model(args, ref, seed: int):
    """scmulan trained from scratch on ``ref`` with generation + annotation, or the identical cached model."""
    import scmulan

    fields = ("coarse_cell_type", "cell_type")
    key = {"data": args.data, "obj": args.objective, "cfg": args.config, "ep": args.epochs, "lr": args.lr or "auto"}
    if args.dropout is not None:
        key["drop"] = args.dropout
    key.update({"bs": args.batch_size, "seed": seed, "n": ref.n_obs, "code": C.code_fingerprint()})
    key.update({"fields": fields, "tasks": ("generation", "annotation")})
    path = C._model_dir(key)
    info_file = path / "benchmark_info.json"
    scmulan.SCMULAN.setup_anndata(ref, **{f"{f}_key": f for f in fields})
    if not args.retrain and info_file.exists():
        info = json.loads(info_file.read_text())
        if info.get("key") == json.loads(json.dumps(key)):
            return scmulan.SCMULAN.load(path, adata=ref), {**info, "cached": True}
    overrides = {} if args.dropout is None else {"dropout": args.dropout}
    model = scmulan.SCMULAN(ref, config=args.config, generation_objective=args.objective, **overrides)
    t0 = time.perf_counter()
    model.train(
        max_epochs=args.epochs,
        tasks=("generation", "annotation"),
        lr=args.lr,
        batch_size=args.batch_size,
        train_size=1.0,
        seed=seed,
        accelerator=C.accelerator(args.device),
        enable_progress_bar=False,
    )
    info = {"key": json.loads(json.dumps(key)), "train_seconds": time.perf_counter() - t0}
    model.save(path, overwrite=True)
    info_file.write_text(json.dumps(info, indent=1))
    return model, {**info, "cached": False}


SAMPLING_KEYS = {
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "gamma": float,
    "guidance": float,
    "level_guidance": float,
    "guidance_steps": int,
    "gene_counts": str,
    "redraws": int,
    "debin": str,
}


def parse_sampling(spec: str) -> dict:
    """``"guidance=1,gene_counts=model"`` -> ``{"guidance": 1.0, "gene_counts": "model"}``; ``"default"`` -> ``{}``.

    Every key but ``debin`` is a ``model.generate`` argument; ``debin=cellmax`` post-processes the generated levels.
    """
    if spec == "default":
        return {}
    out = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in SAMPLING_KEYS:
            msg = f"--sampling: {item!r} is not KEY=VALUE with KEY one of {', '.join(SAMPLING_KEYS)} (or 'default')"
            raise SystemExit(msg)
        out[key] = None if value.lower() == "none" else SAMPLING_KEYS[key](value)
    if out.get("debin", "model") not in ("model", "cellmax"):
        msg = f"--sampling: debin must be 'model' (X as generate returns it) or 'cellmax', got {out['debin']!r}"
        raise SystemExit(msg)
    return out


def generate_cells(model, conditions: dict, args, seed: int, options: dict):
    """``model.generate`` with the sampling ``options`` (unset ones: the model's defaults)."""
    options = {k: v for k, v in options.items() if k != "debin"}  # debin: applied afterwards (cellmax_values)
    return model.generate(conditions, args.n_generated, seed=seed, device=args.device, progress=False, **options)


def cellmax_values(levels, types: np.ndarray, X_train: np.ndarray, y_train: np.ndarray, rng) -> np.ndarray:
    """Levels de-binned by their definition, with a cell maximum drawn from real cells of the requested type.

    A level ``k`` is ``((k - 1) / 10, k / 10]`` of the cell's maximum (``sentence.expression_levels``): each cell
    draws its maximum ``M`` from the maxima of the training cells of its type (the per-cell size a per-gene table
    has not got), its values ``f = (k - 1 + u) / 10`` with ``u`` uniform in ``(0, 1]``, scaled so that its largest
    value is ``M``, as in a real cell.
    """
    L = C.dense(levels).astype(np.float64)
    f = np.where(L > 0, (L - 1 + (1.0 - rng.random(L.shape))) / 10.0, 0.0)
    cell_max = np.zeros(len(L))
    maxima = X_train.max(1)
    for t in np.unique(types):
        rows = types == t
        cell_max[rows] = rng.choice(maxima[y_train == t], int(rows.sum()))
    top = np.maximum(f.max(1, keepdims=True), 1e-12)
    return (f / top * cell_max[:, None]).astype(np.float32)


def load_model(args, ref, seed: int):
    """The split's saved model from ``--model-dir`` (``{seed}`` replaced), set up on ``ref``."""
    import scmulan

    path = Path(args.model_dir.replace("{seed}", str(seed)))
    scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN.load(path, adata=ref)
    info_file = path / "benchmark_info.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    if model.gene_counts_ is None:  # saved before training recorded them: record them as train() does
        from scmulan.model._gene_counts import expressed_genes, gene_count_table
        from scmulan.sentence import CellSource

        source = CellSource(ref, model.vocab, obs_keys=model.obs_keys_)
        X = source.read(np.arange(ref.n_obs))[0]
        model.gene_counts_ = gene_count_table(expressed_genes(X, source.col_token), source.metadata, len(model.vocab))
        info["gene_counts"] = "recorded from the split's training cells on loading"
    return model, {**info, "loaded_from": str(path), "cached": True}


def run_split(args, data, seed: int) -> dict:
    """Train, generate and score every source for one split."""
    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref, test = data[train_idx].copy(), data[test_idx].copy()
    X_train, X_test = C.dense(ref.X), C.dense(test.X)
    y_train = ref.obs["cell_type"].astype(str).to_numpy()
    y_test = test.obs["cell_type"].astype(str).to_numpy()
    coarse_of = dict(zip(y_train, ref.obs["coarse_cell_type"].astype(str), strict=True))
    values, counts = np.unique(y_test, return_counts=True)
    types = [t for t, c in zip(values, counts, strict=True) if c >= 10 and (y_train == t).sum() >= args.min_train]
    if len(types) < 2:
        msg = f"seed {seed}: fewer than 2 types with 10 held-out and {args.min_train} training cells"
        raise SystemExit(msg)

    if args.model_dir:
        C.log(f"seed {seed}: scmulan loaded from {args.model_dir}")
        model, info = load_model(args, ref, seed)
    else:
        C.log(f"seed {seed}: scmulan ({args.config}, {args.epochs} epochs, objective {args.objective})")
        model, info = train_model(args, ref, seed)
    conditions = {"coarse_cell_type": [coarse_of[t] for t in types], "cell_type": types}
    generated_sets, gen_info = {}, {}
    for name, options in args.sampling_options.items():
        t0 = time.perf_counter()
        generated_sets[name] = []
        for r in range(args.repeats):  # repeat r generates with seed + 1000 r
            generated = generate_cells(model, conditions, args, seed + 1000 * r, options)
            # The data's genes under the names the model knows them by (pp.prepare's, e.g. TMBIM4-1 -> TMBIM4);
            # -1: not a model gene (never generated).
            column = generated.var_names.get_indexer(data.var.get("scmulan_gene", data.var_names))
            gen_types = generated.obs["cell_type"].astype(str).to_numpy()
            values = C.dense(generated.X)
            if options.get("debin") == "cellmax":
                rng = np.random.default_rng(seed + 1000 * r)
                values = cellmax_values(generated.layers["levels"], gen_types, X_train, y_train, rng)
            X_gen = np.where(column >= 0, values[:, column], 0.0).astype(np.float32)
            generated_sets[name].append((X_gen, gen_types))
        gen_info[name] = {
            "sampling": options,
            "generated_genes_per_cell": float(np.mean([(g[0] > 0).sum(1).mean() for g in generated_sets[name]])),
            "ended_fraction": float(generated.obs["ended"].mean()),
            # cells the model's own annotation confirmed as the requested type (generate(redraws=...) > 0 only)
            "type_confirmed_fraction": float(generated.obs["type_confirmed"].mean())
            if "type_confirmed" in generated.obs
            else None,
            "generation_seconds": (time.perf_counter() - t0) / args.repeats,
        }
        C.log(f"seed {seed}: {name}: {len(X_gen)} cells in {gen_info[name]['generation_seconds']:.0f} s")
    first = gen_info[next(iter(gen_info))] if gen_info else {}

    counts_train = C.dense(ref.layers["counts"])
    sample_scvi = scvi_sampler(counts_train, y_train, args, seed) if "scvi" in args.sources else None
    project = C.pca_fit(X_train, 30, seed)
    sigma = median_distance(project(X_train), seed)
    half_a, half_b = C.split(y_train, seed, test_size=0.5)
    classifier = C.logreg_fit(X_train[half_a], y_train[half_a], seed=seed)
    ceiling = float((classifier.predict(X_test) == y_test).mean())
    sources = source_names(args)
    real_sets = {t: X_test[y_test == t] for t in types}
    repeats = []  # per repeat: {source: {type: scores}}
    for r in range(args.repeats):  # every source drawn anew (scmulan: its repeat-r cells), scored the same way
        rng = np.random.default_rng(seed + 1000 * r)
        per_type = {s: {} for s in sources}
        sets = {s: {} for s in sources}
        for t in types:
            own_train = half_b[y_train[half_b] == t]
            n = min(args.n_generated, len(own_train))
            candidates = {
                **{name: lambda t=t, n=n, g=g[r]: g[0][g[1] == t][:n] for name, g in generated_sets.items()},
                "independent": lambda t=t, n=n, rng=rng: independent_cells(X_train[y_train == t], n, rng),
                "scvi": lambda t=t, n=n, rng=rng: sample_scvi(t, n, rng),
                "real_train": lambda n=n, own=own_train, rng=rng: X_train[rng.choice(own, n, replace=False)],
            }
            for s in sources:
                cells = candidates[s]()
                sets[s][t] = cells
                per_type[s][t] = set_scores(cells, real_sets[t], t, project, classifier, seed, sigma)
        for s in sources:
            for t, d in de_scores(sets[s], real_sets).items():
                per_type[s][t].update(d)
        repeats.append(per_type)
    per_type = {
        s: {t: {m: float(np.mean([rp[s][t][m] for rp in repeats])) for m in METRICS} for t in types} for s in sources
    }
    scores = {s: {m: float(np.mean([v[m] for v in per_type[s].values()])) for m in METRICS} for s in sources}
    return {
        "seed": seed,
        "types": types,
        "classifier_ceiling": ceiling,
        "chance": 1.0 / len(types),
        "real_genes_per_cell": float((X_test > 0).sum(1).mean()),
        "generated_genes_per_cell": first.get("generated_genes_per_cell", float("nan")),
        "ended_fraction": first.get("ended_fraction", float("nan")),
        "generation_seconds": first.get("generation_seconds", float("nan")),
        "generation": gen_info,
        "scmulan_training": info,
        "scores": scores,
        "per_type": per_type,
    }


def source_names(args) -> list[str]:
    """The scored sources in table order: one scmulan source per sampling setting, then the baselines."""
    mine = list(args.sampling_options) if "scmulan" in args.sources else []
    return [*mine, *(s for s in SOURCES[1:] if s in args.sources)]


def print_table(summary: dict, runs: list[dict], sources: list[str]) -> str:
    """Markdown table: one row per source, then the scmulan C2ST per type."""
    rows = [[s, *(C.fmt(summary[s][m], 3) for m in METRICS)] for s in sources]
    text = C.markdown_table(["cells", *(NAMES[m] for m in METRICS)], rows)
    ceiling = np.mean([r["classifier_ceiling"] for r in runs])
    real_genes = np.mean([r["real_genes_per_cell"] for r in runs])
    text += (
        f"\n\n{len(runs[0]['types'])} types; type accuracy on held-out real cells {ceiling:.3f} (chance "
        f"{np.mean([r['chance'] for r in runs]):.3f}); held-out real cells express {real_genes:.1f} genes, "
        f"scmulan's {np.mean([r['generated_genes_per_cell'] for r in runs]):.1f}; cells ended with <E>: "
        f"{np.mean([r['ended_fraction'] for r in runs]):.3f}."
    )
    types = sorted({t for r in runs for t in r["types"]})
    header = ["cell type", *(f"C2ST {s}" for s in sources)]
    per = [
        [
            t,
            *(
                C.fmt(C.mean_sd([r["per_type"][s][t]["c2st"] for r in runs if t in r["per_type"][s]]), 2)
                for s in sources
            ),
        ]
        for t in types
    ]
    text += "\n\nPer cell type:\n\n" + C.markdown_table(header, per)
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser)
    parser.add_argument("--data", choices=("pbmc", "atlas"), default="pbmc", help="data set (default: %(default)s)")
    parser.add_argument("--objective", choices=("next", "set"), default="next", help="scmulan generation objective")
    parser.add_argument("--dropout", type=float, default=None, help="scmulan network dropout (default: the preset's)")
    parser.add_argument("--n-generated", type=int, default=100, help="cells per type (default: %(default)s)")
    parser.add_argument("--min-train", type=int, default=25, help="training cells a type needs (default: %(default)s)")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), help="sources to score (default: all)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="draw and score every source this many times per split (scmulan: generation seeds seed + 1000 r) and "
        "average: less sampling noise in the comparison of sampling settings (default: %(default)s)",
    )
    parser.add_argument(
        "--model-dir",
        default=None,
        help="load each split's scmulan model from this directory ({seed}: the split seed) instead of training one",
    )
    parser.add_argument(
        "--sampling",
        nargs="+",
        default=["default"],
        metavar="SETTING",
        help="score scmulan once per sampling setting: 'default' (model.generate's defaults) or KEY=VALUE[,KEY=VALUE] "
        f"with KEY in {', '.join(SAMPLING_KEYS)} (default: %(default)s)",
    )
    args = parser.parse_args()
    settings = {spec: parse_sampling(spec) for spec in args.sampling}
    single = list(settings) == ["default"]
    args.sampling_options = {"scmulan" if single else f"scmulan {spec}": o for spec, o in settings.items()}
    if "scmulan" not in args.sources:
        args.sampling_options = {}
    started = time.perf_counter()
    C.setup_runtime(args.threads)
    data = C.load_pbmc() if args.data == "pbmc" else C.load_atlas(args)
    runs = [run_split(args, data, seed) for seed in args.seeds]
    sources = source_names(args)
    summary = {s: C.aggregate([r["scores"][s] for r in runs]) for s in sources}
    results = {"n_cells": data.n_obs, "n_genes": data.n_vars, "runs": runs, "summary": summary}
    results["table_markdown"] = print_table(summary, runs, sources)
    C.write_report(f"compare_generation_{args.data}_{args.objective}", args, results, started, args.out)


if __name__ == "__main__":
    main()
