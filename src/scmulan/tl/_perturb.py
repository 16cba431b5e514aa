"""In-silico perturbation: matched control and perturbed generated cells, and the per-gene effect of the change."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from scmulan.tl._utils import as_model, finish, start

if TYPE_CHECKING:
    from scmulan.model import SCMULAN

CONTROL, PERTURBED = "control", "perturbed"


def perturb(
    model: SCMULAN | str | os.PathLike,
    conditions: Mapping[str, Any] | pd.DataFrame | None,
    genes: Mapping[str, int],
    *,
    n_cells: int = 100,
    seed: int = 0,
    temperature: float = 1.0,
    gamma: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance: float = 1.0,
    gene_counts: Literal["reference", "model"] | None = None,
    annotate: bool | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> AnnData:
    """Generate matched control and perturbed cells, and test every gene for a response to the perturbation.

    Control cells are generated from ``conditions`` alone; perturbed cells from the same conditions with ``genes``
    held at the given levels (levels 1..10 put the gene in every perturbed cell at that level, 0 knocks it out),
    with the same seed. Neither arm is redrawn (:func:`scmulan.tl.generate`'s ``redraws`` is 0 here): a perturbed cell
    whose cell type changed is the result. With the next-entity objective the generation sentence lists genes from the most to the
    least expressed, so a gene is held in the prompt, before every generated gene: a high level (a driver gene
    over-expressed) matches what the model learnt best.

    Parameters
    ----------
    model
        An :class:`~scmulan.SCMULAN`, a saved model directory, or a pretrained name.
    conditions
        Metadata of the cells, as in :func:`scmulan.tl.generate` (e.g. ``{"cell_type": "HSC"}``).
    genes
        ``{gene: level}`` the perturbation sets in every perturbed cell.
    n_cells
        Cells per condition, for each arm.
    seed
        Seed of both arms (control and perturbed cells ``i`` are drawn from the same random stream).
    temperature, gamma, top_k, top_p, gene_counts, batch_size, device, progress
        As in :func:`scmulan.tl.generate` (with reference gene counts, cell ``i`` of both arms has the same number of
        genes, the held genes included).
    guidance
        Classifier-free guidance weight, as in :func:`scmulan.tl.generate`, but 1 (none) by default: guidance pulls
        both arms towards what the conditions alone say, which damps the response to the held genes.
    annotate
        Label every cell with the model's predicted cell type (``obs["predicted_cell_type"]``), to see the shift
        in cell identity; ``None``: when the model learnt annotation.

    Returns
    -------
    One AnnData (``2 * n_cells`` per condition × model genes): ``obs["perturbation"]`` (``"control"`` or
    ``"perturbed"``), ``obs["pair"]`` (the index of the matched cell in the other arm), the conditions,
    ``n_genes`` and, with ``annotate``, ``predicted_cell_type``; ``X`` log-normalised (de-binned) and
    ``layers["levels"]`` as :func:`scmulan.tl.generate`; ``uns["scmulan_perturb"]`` holds ``params``,
    ``genes`` and ``effects``: a DataFrame indexed by gene with ``mean_control``, ``mean_perturbed``,
    ``log2_fold_change`` (of the de-binned expression, ``expm1`` of the means, as Scanpy), ``frac_control``,
    ``frac_perturbed``, ``t`` (Welch's t statistic), ``pvalue``, ``pvalue_adj`` (Benjamini-Hochberg) and
    ``perturbed`` (True for the genes set by the perturbation), sorted by ``|t|``.

    Examples
    --------
    >>> out = scmulan.tl.perturb(model, {"cell_type": "HSC"}, genes={"GATA1": 10}, n_cells=200)  # doctest: +SKIP
    >>> out.uns["scmulan_perturb"]["effects"].head()  # doctest: +SKIP
    >>> scmulan.pl.perturbation(out)  # doctest: +SKIP
    """
    model = as_model(model)
    if not isinstance(genes, Mapping) or not genes:
        msg = "`genes` must be a non-empty mapping {gene: level}, e.g. {'GATA1': 10} (level 0 knocks a gene out)."
        raise ValueError(msg)
    started = start("generating matched control and perturbed cells")
    common = {
        "temperature": temperature,
        "gamma": gamma,
        "top_k": top_k,
        "top_p": top_p,
        "guidance": guidance,
        "gene_counts": gene_counts,
        "redraws": 0,  # matched pairs: a perturbed cell whose type changed is the result, not a draw to redo
        "seed": seed,
        "batch_size": batch_size,
        "device": device,
        "progress": progress,
    }
    perturbed = model.generate(conditions, n_cells, gene_prompts=dict(genes), **common)  # validates `genes` first
    control = model.generate(conditions, n_cells, **common)
    n = control.n_obs
    params = {k: v for k, v in control.uns["scmulan_generate"]["params"].items() if k != "gene_prompts"}
    for arm, adata in ((CONTROL, control), (PERTURBED, perturbed)):
        adata.obs["pair"] = np.arange(n)
        adata.obs_names = [f"{arm}_{i}" for i in range(n)]
        adata.uns.pop("scmulan_generate", None)
    result = ad.concat([control, perturbed], join="outer", merge="same")
    result.obs["perturbation"] = pd.Categorical([CONTROL] * n + [PERTURBED] * n, categories=[CONTROL, PERTURBED])
    for column in control.obs.columns:
        if isinstance(control.obs[column].dtype, pd.CategoricalDtype):
            result.obs[column] = pd.Categorical(result.obs[column].astype(str))
    if annotate is None:
        annotate = "annotation" in getattr(model, "trained_tasks_", []) and bool(model.annotation_fields)
    if annotate:
        with warnings.catch_warnings():  # generated X is de-binned, not log1p of counts: the check does not apply
            warnings.filterwarnings("ignore", message=".*does not look like log1p", category=UserWarning)
            labels = model.annotate(result, batch_size=batch_size, device=device, progress=progress)
        result.obs["predicted_cell_type"] = labels["fine"].astype(str).to_numpy()
        result.obs["predicted_cell_type"] = result.obs["predicted_cell_type"].astype("category")
    is_perturbed = (result.obs["perturbation"] == PERTURBED).to_numpy()
    effects = effect_table(result.X, is_perturbed, result.var_names)
    effects["perturbed"] = effects.index.isin(list(genes))
    result.uns["scmulan_perturb"] = {
        "params": params,
        "genes": {str(g): int(v) for g, v in genes.items()},
        "effects": effects,
    }
    finish(started, ["obs['perturbation']", "uns['scmulan_perturb']['effects']"])
    return result


def effect_table(X: sparse.spmatrix | np.ndarray, perturbed: np.ndarray, genes: pd.Index) -> pd.DataFrame:
    """Per-gene effect of the perturbation: means, log2 fold change, expressing fractions and Welch's t-test.

    Parameters
    ----------
    X
        Log-normalised expression (cells × genes).
    perturbed
        ``(n_cells,)`` True for perturbed cells, False for controls.
    genes
        Gene names (the index of the table).
    """
    from scipy import stats

    X = sparse.csr_matrix(X, dtype=np.float64)
    perturbed = np.asarray(perturbed, dtype=bool)
    if perturbed.all() or not perturbed.any():
        msg = "Both control and perturbed cells are needed to measure an effect."
        raise ValueError(msg)

    def moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        sub = X[rows]
        m = np.asarray(sub.mean(0)).ravel()
        m2 = np.asarray(sub.multiply(sub).mean(0)).ravel()
        n = sub.shape[0]
        var = np.maximum(m2 - m**2, 0.0) * n / max(n - 1, 1)
        frac = np.asarray((sub > 0).mean(0)).ravel()
        return m, var, frac, n

    mc, vc, fc, nc = moments(~perturbed)
    mp, vp, fp, n_p = moments(perturbed)
    se2 = vc / nc + vp / n_p
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se2 > 0, (mp - mc) / np.sqrt(se2), 0.0)
        df = se2**2 / ((vc / nc) ** 2 / max(nc - 1, 1) + (vp / n_p) ** 2 / max(n_p - 1, 1))
    df = np.where(np.isfinite(df) & (df > 0), df, 1.0)
    pvalue = np.where(se2 > 0, 2 * stats.t.sf(np.abs(t), df), 1.0)
    lfc = np.log2((np.expm1(mp) + 1e-9) / (np.expm1(mc) + 1e-9))
    table = pd.DataFrame(
        {
            "mean_control": mc,
            "mean_perturbed": mp,
            "log2_fold_change": lfc,
            "frac_control": fc,
            "frac_perturbed": fp,
            "t": t,
            "pvalue": pvalue,
            "pvalue_adj": _benjamini_hochberg(pvalue),
        },
        index=pd.Index(genes, name="gene"),
    )
    return table.iloc[np.argsort(-np.abs(t), kind="stable")]


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(n)
    out[order] = adjusted
    return out
