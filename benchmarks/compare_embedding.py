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

Metrics: scib-metrics' ``Benchmarker`` (the scIB table of integration papers) on the held-out cells, batch =
``technology``, labels = the fine ``cell_type``, with its default metric sets. Bio conservation: isolated labels,
KMeans NMI and ARI, label silhouette, cLISI; batch correction: BRAS (the batch silhouette of scib-metrics >= 0.5),
iLISI, kBET, graph connectivity, PCR comparison (against a PCA of the held-out cells' log-normalised expression,
computed by the ``Benchmarker``). Each aggregate is the mean of its metrics, and ``Total`` = 0.6 bio + 0.4 batch, as
scIB weighs them; the scores are not min-max scaled across embeddings, so they are comparable between runs. scib-metrics
is a benchmark dependency (``pip install 'scmulan[benchmark]'``: it computes with jax, CPU build). In this atlas
technologies are unevenly spread over organs (and organs over cell types), so even a perfect embedding does not reach
1 on batch correction.

    python benchmarks/compare_embedding.py                    # defaults: reuses the atlas models of the other scripts
    python benchmarks/compare_embedding.py --seeds 0 --atlas-cells 600 --epochs 2 --scvi-epochs 5 \\
        --scanvi-epochs 2 --out benchmarks/results/compare_embedding_smoke.json   # a smoke run (about a minute)
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
# Columns of scib-metrics' results table, in its order: bio conservation, batch correction, aggregates.
BIO = ("Isolated labels", "KMeans NMI", "KMeans ARI", "Silhouette label", "cLISI")
BATCH = ("BRAS", "iLISI", "KBET", "Graph connectivity", "PCR comparison")
AGGREGATES = ("Bio conservation", "Batch correction", "Total")


def scib_scores(test, embs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """scib-metrics' ``Benchmarker`` (default bio-conservation and batch-correction metrics) on the held-out cells.

    ``test.X`` (log-normalised, not integrated) is what the ``Benchmarker`` runs its own PCA on for the PCR
    comparison; every embedding is an ``obsm`` entry of the same cells. Returns ``{embedding: {metric: score}}``
    with the aggregates ``Bio conservation``, ``Batch correction`` and ``Total``.
    """
    import logging

    import anndata as ad
    import scib_metrics
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    scib_metrics.settings.verbosity = logging.WARNING  # not one line per cell type too small for kBET/BRAS
    adata = ad.AnnData(
        X=C.dense(test.X),
        obs=test.obs[["cell_type", "technology"]].astype(str).astype("category"),
        obsm={name: np.asarray(emb, dtype=np.float32) for name, emb in embs.items()},
    )
    bench = Benchmarker(
        adata,
        batch_key="technology",
        label_key="cell_type",
        embedding_obsm_keys=list(embs),
        bio_conservation_metrics=BioConservation(),
        batch_correction_metrics=BatchCorrection(),
        n_jobs=1,
        progress_bar=False,
    )
    bench.benchmark()
    table = bench.get_results(min_max_scale=False).drop(index="Metric Type")
    return {name: {col: float(table.loc[name, col]) for col in table.columns} for name in embs}


def run_split(args, data, seed: int) -> dict:
    """Fit every embedding on one split and score it on the held-out cells."""
    import anndata as ad
    import scvi

    train_idx, test_idx = C.split(data.obs["cell_type"], seed)
    ref, test = data[train_idx].copy(), data[test_idx].copy()
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

    C.log(f"seed {seed}: scib-metrics Benchmarker on {test.n_obs} held-out cells")
    t0 = time.perf_counter()
    scores = scib_scores(test, {name: embs[name] for name in EMBEDDINGS})
    C.log(f"seed {seed}: scib-metrics took {time.perf_counter() - t0:.0f} s")
    for name in EMBEDDINGS:
        scores[name]["dims"] = int(embs[name].shape[1])
    for name in scores:
        scores[name]["seconds"] = seconds.get(name, seconds.get("scmulan"))
    return {"seed": seed, "n_train": ref.n_obs, "n_test": test.n_obs, "scmulan_training": info, "scores": scores}


def print_table(summary: dict) -> str:
    """Markdown table: one row per embedding, scib-metrics' columns (mean ± s.d. over the split seeds)."""
    cols = [c for c in (*BIO, *BATCH, *AGGREGATES) if c in next(iter(summary.values()))]
    rows = [[e, *(C.fmt(summary[e][c]) for c in cols)] for e in EMBEDDINGS if e in summary]
    text = C.markdown_table(["embedding", *cols], rows)
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
