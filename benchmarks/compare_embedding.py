"""Embedding quality on a synthetic atlas with technology batch effects: scmulan vs PCA vs scVI (and scANVI).

Per split seed, every embedding is fitted on the stratified 80 % of ``scmulan.datasets.synthetic_atlas`` and
evaluated on the held-out 20 % (cells no method was fitted on; scVI/scANVI map them with
``get_latent_representation``, PCA projects them on the training components). The batch is ``technology``.

Embeddings:

- ``scmulan_annotation``: ``get_latent_representation(query, pooling="annotation")`` (the original's ``X_scMulan``:
  last hidden state at the first decoded cell type) of the shared atlas model (trained with generation, annotation
  and metadata; the query carries no ``obs``);
- ``scmulan_annotation_tech``: the same with the cell's technology in the prompt (the model was trained with
  metadata context; this is the analogue of giving scVI its batch key);
- ``scmulan_mean``: ``pooling="mean"`` (mean last hidden state over the gene positions);
- ``pca``: ``scanpy.pp.pca`` (50 components) of the log-normalised training cells;
- ``scvi``: ``scvi.model.SCVI`` on the raw counts, no batch key (10 latent dimensions);
- ``scvi_batch``: SCVI with ``batch_key="technology"`` (what a user integrating batches runs);
- ``scanvi_batch``: ``SCANVI.from_scvi_model(scvi_batch)`` with the training cells' fine labels — a *supervised*
  peer: scmulan's annotation embedding is trained with labels too, PCA and scVI are not.

Metrics (scikit-learn; the light fallbacks of scib, no scib-metrics): bio conservation — ARI and NMI of KMeans
(k = number of fine types, 10 restarts) against the fine labels, Leiden ARI/NMI when ``leidenalg`` is installed
(skipped otherwise), label silhouette ``(ASW + 1) / 2``; batch mixing — batch silhouette as in scib (within each fine
type, ``1 - |silhouette(technology)|``, averaged over types) and a kNN mixing score in the spirit of iLISI: each cell's
30 nearest neighbours, the inverse Simpson index of their technologies, averaged, as ``(L - 1) / (L_random - 1)``
where ``L_random`` is its value for neighbours drawn at random (1 = as mixed as random, 0 = one technology). Bio and
batch are averaged and combined as scib does (0.6 bio + 0.4 batch). In this atlas technologies are unevenly spread
over organs (and organs over cell types), so even a perfect embedding does not reach 1 on mixing.

    python benchmarks/compare_embedding.py                    # defaults: reuses the atlas models of the other scripts
    python benchmarks/compare_embedding.py --seeds 0 1 2 3 4 --config small --epochs 100 --atlas-cells 10000 \\
        --device cuda                   # the issue's 5 seeds, GPU
"""

from __future__ import annotations

import argparse
import time

import _compare as C
import numpy as np

EMBEDDINGS = (
    "scmulan_annotation",
    "scmulan_annotation_tech",
    "scmulan_mean",
    "pca",
    "scvi",
    "scvi_batch",
    "scanvi_batch",
)
BIO = ("kmeans_ari", "kmeans_nmi", "label_asw")
BATCH = ("batch_asw", "knn_mixing")


def batch_asw(emb: np.ndarray, labels: np.ndarray, batches: np.ndarray) -> float:
    """scib's batch ASW: per label, mean of ``1 - |silhouette_samples(emb, batch)|``; averaged over labels."""
    from sklearn.metrics import silhouette_samples

    scores = []
    for lab in np.unique(labels):
        sel = labels == lab
        b = batches[sel]
        if not 2 <= len(np.unique(b)) < sel.sum():  # silhouettes need 2 .. n_cells - 1 batches
            continue
        s = silhouette_samples(emb[sel], b)
        scores.append(np.mean(1 - np.abs(s)))
    return float(np.mean(scores)) if scores else float("nan")


def knn_mixing(emb: np.ndarray, batches: np.ndarray, k: int = 30) -> float:
    """Mean inverse Simpson index of the batches among each cell's k nearest neighbours, scaled to random = 1."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(emb) - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
    codes, inverse = np.unique(batches, return_inverse=True)
    neigh = inverse[idx[:, 1:]]
    props = np.stack([(neigh == j).mean(1) for j in range(len(codes))], axis=1)
    lisi = 1.0 / (props**2).sum(1)
    p = np.bincount(inverse, minlength=len(codes)) / len(inverse)
    random_lisi = 1.0 / (p**2).sum()
    return float((lisi.mean() - 1) / max(random_lisi - 1, 1e-12))


def leiden_scores(emb: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Leiden (resolution 1, 15-NN graph) ARI/NMI if ``leidenalg`` is installed, else ``{}``."""
    try:
        import leidenalg  # noqa: F401
    except ImportError:
        return {}
    import anndata as ad
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a = ad.AnnData(np.zeros((len(emb), 1), dtype=np.float32))
    a.obsm["X"] = emb
    sc.pp.neighbors(a, use_rep="X", n_neighbors=15, random_state=seed)
    sc.tl.leiden(a, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2)
    clusters = a.obs["leiden"].to_numpy()
    return {
        "leiden_ari": float(adjusted_rand_score(labels, clusters)),
        "leiden_nmi": float(normalized_mutual_info_score(labels, clusters)),
    }


def embedding_scores(emb: np.ndarray, labels: np.ndarray, batches: np.ndarray, seed: int) -> dict:
    """Every bio-conservation and batch-mixing score of one embedding."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    emb = np.asarray(emb, dtype=np.float64)
    k = len(np.unique(labels))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(emb)
    out = {
        "kmeans_ari": float(adjusted_rand_score(labels, clusters)),
        "kmeans_nmi": float(normalized_mutual_info_score(labels, clusters)),
        "label_asw": float((silhouette_score(emb, labels) + 1) / 2),
        "batch_asw": batch_asw(emb, labels, batches),
        "knn_mixing": knn_mixing(emb, batches),
    }
    out.update(leiden_scores(emb, labels, seed))
    out["bio"] = float(np.mean([out[m] for m in BIO]))
    out["batch"] = float(np.mean([out[m] for m in BATCH]))
    out["overall"] = 0.6 * out["bio"] + 0.4 * out["batch"]
    return out


def run_split(args, data, seed: int) -> dict:
    """Fit every embedding on one split and score it on the held-out cells."""
    import anndata as ad
    import scvi

    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref, test = data[train_idx].copy(), data[test_idx].copy()
    labels = test.obs["cell_type"].astype(str).to_numpy()
    batches = test.obs["technology"].astype(str).to_numpy()
    embs, seconds = {}, {}

    C.log(f"seed {seed}: scmulan ({args.config}, {args.epochs} epochs)")
    model, info = C.atlas_model(args, ref, seed)
    t0 = time.perf_counter()
    query = C.without_labels(test)
    embs["scmulan_annotation"] = model.get_latent_representation(
        query, pooling="annotation", device=args.device, progress=False
    )
    embs["scmulan_annotation_tech"] = model.get_latent_representation(
        C.without_labels(test, keep=["technology"]), pooling="annotation", device=args.device, progress=False
    )
    embs["scmulan_mean"] = model.get_latent_representation(query, pooling="mean", device=args.device, progress=False)
    seconds["scmulan"] = info["train_seconds"] + time.perf_counter() - t0

    C.log(f"seed {seed}: pca, scvi, scvi_batch, scanvi_batch ({args.scvi_epochs} epochs)")
    t0 = time.perf_counter()
    embs["pca"] = C.pca_fit(C.dense(ref.X), 50, seed)(C.dense(test.X))
    seconds["pca"] = time.perf_counter() - t0

    def counts(a):
        out = ad.AnnData(X=a.layers["counts"].copy(), obs=a.obs[["cell_type", "technology"]].copy())
        out.obs_names = a.obs_names
        return out

    ref_counts, test_counts = counts(ref), counts(test)
    test_counts.obs["cell_type"] = "Unknown"  # the query's labels are never shown (scANVI's unlabeled category)
    for name, batch_key in (("scvi", None), ("scvi_batch", "technology")):
        t0 = time.perf_counter()
        m = C.scvi_model(ref_counts, batch_key=batch_key, epochs=args.scvi_epochs, seed=seed, device=args.device)
        embs[name] = m.get_latent_representation(test_counts)
        seconds[name] = time.perf_counter() - t0
        if batch_key:
            t0 = time.perf_counter()
            scvi.settings.seed = seed
            sup = scvi.model.SCANVI.from_scvi_model(m, unlabeled_category="Unknown", labels_key="cell_type")
            sup.train(
                max_epochs=args.scanvi_epochs,
                n_samples_per_label=100,
                accelerator=C.accelerator(args.device),
                enable_progress_bar=False,
                logger=False,
                enable_model_summary=False,
            )
            embs["scanvi_batch"] = sup.get_latent_representation(test_counts)
            seconds["scanvi_batch"] = seconds[name] + time.perf_counter() - t0

    scores = {}
    for name in EMBEDDINGS:
        scores[name] = embedding_scores(embs[name], labels, batches, seed)
        scores[name]["dims"] = int(embs[name].shape[1])
    for name in scores:
        scores[name]["seconds"] = seconds.get(name, seconds.get("scmulan"))
    return {"seed": seed, "n_train": ref.n_obs, "n_test": test.n_obs, "scmulan_training": info, "scores": scores}


def print_table(summary: dict) -> str:
    """Markdown table: one row per embedding."""
    has_leiden = "leiden_ari" in next(iter(summary.values()))
    cols = [
        "kmeans_ari",
        "kmeans_nmi",
        *(["leiden_ari", "leiden_nmi"] if has_leiden else []),
        "label_asw",
        "batch_asw",
        "knn_mixing",
        "bio",
        "batch",
        "overall",
    ]
    names = {
        "kmeans_ari": "KMeans ARI",
        "kmeans_nmi": "KMeans NMI",
        "leiden_ari": "Leiden ARI",
        "leiden_nmi": "Leiden NMI",
        "label_asw": "label ASW",
        "batch_asw": "batch ASW",
        "knn_mixing": "kNN mixing",
        "bio": "bio",
        "batch": "batch",
        "overall": "overall",
    }
    rows = [[e, *(C.fmt(summary[e][c]) for c in cols)] for e in EMBEDDINGS if e in summary]
    text = C.markdown_table(["embedding", *(names[c] for c in cols)], rows)
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
    summary = {e: C.aggregate([r["scores"][e] for r in runs]) for e in EMBEDDINGS}
    results = {"n_cells": data.n_obs, "n_genes": data.n_vars, "runs": runs, "summary": summary}
    results["table_markdown"] = print_table(summary)
    C.write_report("compare_embedding", args, results, started, args.out)


if __name__ == "__main__":
    main()
