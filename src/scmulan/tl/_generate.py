"""Conditional cell generation into a new AnnData."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from anndata import AnnData

from scmulan.tl._utils import as_model, finish, start

if TYPE_CHECKING:
    from scmulan.model import SCMULAN


def generate(
    model: SCMULAN | str | os.PathLike,
    conditions: Mapping[str, Any] | pd.DataFrame | None = None,
    *,
    n_cells: int = 100,
    gene_prompts: Mapping[str, int] | None = None,
    temperature: float = 1.0,
    gamma: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance: float | None = None,
    level_guidance: float = 1.0,
    guidance_steps: int | None = None,
    gene_counts: Literal["reference", "model"] | None = None,
    redraws: int | None = None,
    seed: int = 0,
    max_length: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> AnnData:
    """Generate cells conditioned on metadata, optionally with fixed gene levels (in-silico perturbation).

    Parameters
    ----------
    model
        An :class:`~scmulan.SCMULAN`, a saved model directory, or a pretrained name (loaded once per process).
    conditions
        ``{"organ": "Heart", "cell_type": "Cardiomyocyte cell"}`` (one condition; the original model's names),
        ``{"cell_type": ["B cell", "NK cell"]}`` (one condition per list position) or a DataFrame (one row per
        condition, one column per field). Categories must be known to the model (an unknown one raises with close
        matches and the valid ones; ``model.vocab.categories(field)`` lists them all).
    n_cells
        Cells per condition.
    gene_prompts
        ``{gene: level}`` fixed in every cell (levels 1..10; 0 forbids the gene).
    temperature
        Softmax temperature.
    gamma
        Factor on the probability of ending the cell at each step (< 1: longer cells). ``None``: 1 for models trained
        with the next-entity objective (their stop is calibrated), 0.1 for the set objective and the original
        checkpoint (the original's setting).
    top_k
        Sample among the ``top_k`` most likely entities only.
    top_p
        Sample among the most likely entities whose probability first reaches ``top_p`` (``None``: off).
    guidance
        Classifier-free guidance weight towards the conditions (1: none). ``None``: 1.5 for models trained with the
        next-entity objective when a condition is given (1.75 with a gene bag), else 1.
    level_guidance
        The same guidance for the levels of the drawn genes (1: none; next-entity models only).
    guidance_steps
        Guide only the first ``guidance_steps`` genes of each cell (``None``: all).
    gene_counts
        ``"reference"``: each cell's number of genes is drawn from training cells of its condition; ``"model"``:
        the model's stop decides. ``None``: ``"reference"`` for models that recorded their training cells' gene
        counts (trained with this version), else ``"model"``.
    redraws
        The model annotates the cells it generated; a cell whose requested cell type it does not return is drawn
        again, up to ``redraws`` times (``obs['type_confirmed']`` says which cells were confirmed). ``None``: 2 when
        a condition names a cell type and no gene is prompted (next-entity models trained on annotation), else 0.
    seed
        Same seed, batch size and device give the same cells.
    max_length
        Longest sentence (prompt included); default: the model's.
    batch_size, device, progress
        As in :func:`scmulan.tl.annotate`.

    Returns
    -------
    A new AnnData (cells × model genes): ``obs`` holds the conditions plus ``n_genes``, ``ended`` and, when cells
    were checked, ``type_confirmed``;
    ``layers['levels']`` the generated levels (1..10, 0 = not generated); ``X`` the levels de-binned to
    log-normalised units with the per-gene, per-level means the model learned from its training data (for the
    imported original checkpoint, which has none, ``level / 10``: the fraction of the cell's maximum);
    ``uns['scmulan_generate']`` the parameters and the scale of ``X``.
    """
    model = as_model(model)
    started = start("generating cells")
    result = model.generate(
        conditions,
        n_cells,
        gene_prompts=gene_prompts,
        temperature=temperature,
        gamma=gamma,
        top_k=top_k,
        top_p=top_p,
        guidance=guidance,
        level_guidance=level_guidance,
        guidance_steps=guidance_steps,
        gene_counts=gene_counts,
        redraws=redraws,
        seed=seed,
        max_length=max_length,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    finish(started, ["a new AnnData"])
    return result
