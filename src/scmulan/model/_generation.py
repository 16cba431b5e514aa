"""Conditional generation of cells into new AnnData objects, and the de-binning table (recipes of ``SCMULAN``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scmulan._device import resolve_device
from scmulan._plain import plain
from scmulan._warnings import warn
from scmulan.model._debin import debin, debinning_table
from scmulan.model._gene_counts import draw_gene_counts
from scmulan.model._inference import SamplingRecipe, generate_cells
from scmulan.model._parts import ModelParts
from scmulan.model._query import query_source
from scmulan.sentence import GeneSegments

if TYPE_CHECKING:
    from scmulan.nn import TransformerConfig

#: Classifier-free guidance weight of next-entity models given a condition (``benchmarks/README.md``, "Decoding
#: sweep": type recovery 0.63 -> 0.76 and C2ST 0.72 -> 0.68 with training-cell gene counts, 2 splits x 3 draws).
DEFAULT_GUIDANCE = 1.5
#: The same for networks with a gene bag, whose next gene also depends on a summary of the genes already emitted
#: (``benchmarks/README.md``, "Gene bag": ``small``, 5 PBMC splits, type recovery 0.653 -> 0.682, higher on every
#: split, at the same C2ST, 0.642).
GENE_BAG_GUIDANCE = 1.75
#: Redraws of generated cells whose requested cell type the model's own annotation does not return
#: (``benchmarks/README.md``, "Redrawing unconfirmed cells").
DEFAULT_REDRAWS = 2


def default_guidance(config: TransformerConfig) -> float:
    """The guidance weight ``generate`` uses, when a condition is given, for a next-entity network of ``config``.

    Parameters
    ----------
    config
        The network's configuration.

    Returns
    -------
    ``GENE_BAG_GUIDANCE`` (1.75) for a network with a gene bag, ``DEFAULT_GUIDANCE`` (1.5) otherwise.
    """
    return GENE_BAG_GUIDANCE if config.gene_bag else DEFAULT_GUIDANCE


def default_redraws(parts: ModelParts, condition_fields: list[str], *, gene_prompts: bool, legacy: bool) -> int:
    """How often ``generate`` redraws, by default, the cells its own annotation does not confirm.

    Parameters
    ----------
    parts
        The model's parts (``model.parts()``).
    condition_fields
        The fields the conditions name.
    gene_prompts
        Whether genes are prompted (in-silico perturbation, where a changed cell type is the result to keep).
    legacy
        Whether the original's sampling was asked for.

    Returns
    -------
    2 (``DEFAULT_REDRAWS``) for a next-entity model trained on annotation, given a cell-type condition and no gene
    prompts; 0 otherwise (nothing to confirm, or sampling as the original).
    """
    can_check = bool(_type_fields(parts, condition_fields)) and "annotation" in parts.trained_tasks
    return DEFAULT_REDRAWS if can_check and parts.next_entity and not (legacy or gene_prompts) else 0


def generate(
    parts: ModelParts,
    conditions: Mapping[str, Any] | pd.DataFrame | None = None,
    n_cells: int = 1,
    *,
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
    legacy: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> AnnData:
    """Generate cells conditioned on metadata (and optionally on fixed gene levels).

    Parameters
    ----------
    conditions
        ``{field: category}`` (one condition), ``{field: [categories…]}`` (one condition per position), or a
        DataFrame with one row per condition and a column per field. ``None``: unconditional.
    n_cells
        Cells generated per condition.
    gene_prompts
        ``{gene: level}`` set in every generated cell (levels 1..10 put the gene in the prompt at that level;
        level 0 forbids the gene), e.g. for in-silico perturbation.
    temperature, gamma, top_k
        Sampling controls: softmax temperature, the factor on the probability of ending the cell and top-k
        filtering. ``gamma=None``: 1 (no correction) for models trained with the next-entity objective, whose
        stop is calibrated by training; 0.1 for the set objective and the original checkpoint (the original's
        length control, < 1 gives longer cells; 0.1 in all published runs).
    top_p
        Nucleus filtering: sample among the most likely entities whose probability first reaches ``top_p``.
        ``None``: off.
    guidance
        Classifier-free guidance weight: the entity logits are moved from those given the same prompt without its
        metadata conditions towards (and ``guidance - 1`` beyond) those given the conditions. ``None``: 1.5 for
        next-entity models when a condition is given, 1.75 when the network also has a gene bag (cells of the
        requested type are recovered more often and are closer to real ones: ``benchmarks/README.md``, "Decoding
        sweep" and "Gene bag"; :func:`scmulan.model.default_guidance`), else 1 (none; always for the set objective,
        the original checkpoint and ``legacy=True``).
    level_guidance
        Classifier-free guidance weight of the levels of the drawn genes (1: none, the levels are drawn given the
        conditions alone), for next-entity models. At 1.75 with the gene bag's default guidance it raised type
        recovery by 0.012 at a similar two-sample test (``benchmarks/README.md``, "Guiding the levels"); off by
        default.
    guidance_steps
        Guide the entity logits at the first ``guidance_steps`` genes of each cell only, then sample given the
        conditions alone (``None``: every gene).
    gene_counts
        How many genes each cell gets. ``"reference"``: drawn, per cell, from the gene counts of the training cells
        of its narrowest condition (e.g. its fine cell type), as scVI draws a library size (the model's own stop
        gives lengths about 2.6 times as variable as real cells'); ``"model"``: where the model draws ``<E>``
        (shaped by ``gamma``). ``None``: ``"reference"`` when the model recorded its training cells' gene counts
        (models trained with this version), else ``"model"``; always ``"model"`` with ``legacy=True``.
    redraws
        The generated cells are annotated by the model itself (:meth:`annotate`); a cell whose requested cell type
        (coarse and/or fine, as the conditions name them) it does not return is drawn again with a new seed, up to
        ``redraws`` times, and its last draw is kept when none is confirmed (``obs["type_confirmed"]`` says which
        cells are). Redrawing trades some of the model's spread for cells typical of their type: on three PBMC
        splits it raised type recovery from 0.773 to 0.823 (0.687 to 0.830 with a gene bag) and lowered the
        two-sample test's AUROC (0.684 to 0.674; 0.659 to 0.646), for 1.9 times the generation time
        (``benchmarks/README.md``, "Redrawing unconfirmed cells"). ``None``: 2 for next-entity models trained on
        annotation when a condition names a cell type and no gene is prompted, else 0
        (:func:`scmulan.model.default_redraws`; an in-silico
        perturbation keeps the cells whose type it changed).
    seed
        Same seed, batch size and device → the same cells.
    max_length
        Longest sentence (prompt included); default: the model's ``max_length``.
    legacy
        Sample exactly as the original ``generate_cellGenesis`` (any entity may be drawn, the most recent one is
        not banned, levels 0..10).
    batch_size, device, progress
        See :meth:`annotate`.

    Returns
    -------
    A new AnnData (cells × model genes): ``obs`` holds the conditions, ``n_genes``, ``ended`` (the cell
    ended with ``<E>`` rather than at ``max_length``) and, when cells were checked (``redraws`` > 0),
    ``type_confirmed``; ``layers["levels"]`` the generated levels 1..10;
    ``X`` the levels de-binned to log-normalised values (per-gene, per-level means of the training data, drawn
    within each level's range for next-entity models, see ``scmulan.model._debin.debin``; without a table,
    e.g. for the original checkpoint, ``level / 10`` = fraction of the cell's maximum).
    """
    from scipy import sparse

    parts.require_task("generation", "generate")
    next_entity = parts.next_entity and not legacy
    if gamma is None:
        gamma = 1.0 if next_entity else 0.1
    _check_sampling(temperature=temperature, gamma=gamma, top_k=top_k, top_p=top_p, batch_size=batch_size)
    gene_counts = _gene_count_source(parts, gene_counts, legacy)
    table = _conditions_table(parts, conditions, n_cells)
    fields = [f for f in parts.vocab.metadata_fields if f in table.columns]
    tokens = np.full((len(table), len(fields)), -1, dtype=np.int64)
    for j, f in enumerate(fields):
        col = table[f]
        present = col.notna().to_numpy()
        tokens[present, j] = parts.vocab.token_ids(f, col[present].astype(str).tolist())
    prompt = _gene_prompt(parts, gene_prompts, len(table))
    n_prompt_genes = len(prompt[0].ids) // max(1, len(table)) if prompt else 0
    limit = parts.layout.generation_budget(len(fields), n_prompt_genes, max_length=max_length)
    if guidance is None:
        guidance = default_guidance(parts.network.config) if next_entity and bool((tokens >= 0).any()) else 1.0
    _check_guidance(guidance, legacy)
    _check_level_guidance(level_guidance, guidance_steps, next_entity=next_entity, legacy=legacy)
    if redraws is None:
        named = [f for f in fields if table[f].notna().any()]
        redraws = default_redraws(parts, named, gene_prompts=bool(gene_prompts), legacy=legacy)
    checks = _check_redraws(parts, redraws, table, legacy)
    recipe = {
        "temperature": temperature,
        "top_k": top_k,
        "gamma": gamma,
        "top_p": top_p,
        "guidance": guidance,
        "level_guidance": level_guidance,
        "guidance_steps": guidance_steps,
        "legacy": legacy,
    }

    def draw(rows: np.ndarray, draw_seed: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix, np.ndarray]:
        """Levels, de-binned values and ``ended`` of new cells for the conditions ``table`` rows ``rows``."""
        prompt = _gene_prompt(parts, gene_prompts, len(rows))
        n_genes = None
        if gene_counts == "reference":  # the prompted genes are part of the cell's count
            drawn = draw_gene_counts(parts.gene_counts, tokens[rows], np.random.default_rng([draw_seed, 1]))
            n_genes = np.where(drawn >= 0, np.maximum(drawn - n_prompt_genes, 0), -1)
        out = generate_cells(
            parts.network,
            parts.vocab,
            tokens[rows],
            SamplingRecipe(**recipe, seed=draw_seed),
            layout=parts.layout,
            prompt_genes=prompt[0] if prompt else None,
            exclude=prompt[1] if prompt else None,
            n_genes=n_genes,
            max_new_tokens=limit,
            batch_size=batch_size,
            device=resolve_device(device),
            progress=progress,
        )
        # next-entity models: values drawn within each level's range (the set objective and legacy: the level mean)
        within = np.random.default_rng(draw_seed) if next_entity else None
        return (*_cell_matrices(parts, out, len(rows), within), out.ended)

    levels, values, ended = draw(np.arange(len(table)), seed)
    ended, confirmed = np.array(ended, dtype=bool), None
    if checks:
        confirmed = _confirmed(parts, values, table, checks, batch_size=batch_size, device=device)
        for round_ in range(1, redraws + 1):
            again = np.flatnonzero(~confirmed)
            if not len(again):
                break
            new_levels, new_values, new_ended = draw(again, _redraw_seed(seed, round_))
            levels, values = _replace_rows(levels, again, new_levels), _replace_rows(values, again, new_values)
            ended[again] = new_ended
            confirmed[again] = _confirmed(
                parts, new_values, table.iloc[again], checks, batch_size=batch_size, device=device
            )
    obs = table.copy()
    for f in obs.columns:
        obs[f] = pd.Categorical(obs[f])
    obs["n_genes"] = np.diff(levels.indptr)
    obs["ended"] = ended
    if confirmed is not None:
        obs["type_confirmed"] = confirmed
    obs.index = [f"generated_{i}" for i in range(len(obs))]
    result = AnnData(X=values, obs=obs, var=pd.DataFrame(index=parts.vocab.genes), layers={"levels": levels})
    if parts.debin_table is None:
        warn(
            "This model has no de-binning table (the original checkpoint carries none): the generated `X` holds "
            "level / 10, not log-normalised values. Call `model.fit_debinning(reference)` with log-normalised "
            "reference cells first to get values on the data's scale.",
            UserWarning,
        )
    result.uns["scmulan_generate"] = {
        "params": plain(
            {
                "n_cells": n_cells,
                "temperature": temperature,
                "gamma": gamma,
                "top_k": top_k if top_k is not None else 0,
                "top_p": top_p if top_p is not None else 1.0,
                "guidance": guidance,
                "level_guidance": level_guidance,
                "guidance_steps": guidance_steps if guidance_steps is not None else -1,
                "gene_counts": gene_counts,
                "redraws": redraws,
                "seed": seed,
                "max_length": max_length or parts.layout.max_length,
                "legacy": legacy,
                "gene_prompts": dict(gene_prompts or {}),
            }
        ),
        "scale": "X: log-normalised (de-binned)" if parts.debin_table is not None else "X: level / 10",
    }
    return result


def _conditions_table(parts: ModelParts, conditions, n_cells: int) -> pd.DataFrame:
    if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 1:
        msg = f"`n_cells` must be an integer >= 1, got {n_cells!r}."
        raise ValueError(msg)
    if conditions is None:
        table = pd.DataFrame(index=range(1))
    elif isinstance(conditions, pd.DataFrame):
        table = conditions.reset_index(drop=True)
    elif not isinstance(conditions, Mapping):
        msg = (
            "`conditions` must be a mapping such as {'organ': 'Lung', 'cell_type': 'T cell'}, a DataFrame with "
            f"one row per condition, or None; got {type(conditions).__name__}."
        )
        raise TypeError(msg)
    else:
        values = dict(conditions)
        lengths = {len(v) for v in values.values() if isinstance(v, list | tuple | np.ndarray | pd.Series)}
        if len(lengths) > 1:
            msg = "Lists in `conditions` must all have the same length."
            raise ValueError(msg)
        table = pd.DataFrame(values, index=range(lengths.pop() if lengths else 1))
    if len(table) == 0:
        msg = "`conditions` holds no condition (an empty list or DataFrame); give at least one."
        raise ValueError(msg)
    for f in table.columns:
        if f not in parts.vocab.metadata_fields:
            msg = f"Unknown condition field {f!r}; the model knows {parts.vocab.metadata_fields}."
            raise ValueError(msg)
        cats = table[f].dropna().astype(str).unique()
        unknown = [c for c in cats if not parts.vocab.has_token(f, c)]
        if unknown:
            raise ValueError(_unknown_categories_message(parts, f, unknown))
    return table.loc[table.index.repeat(n_cells)].reset_index(drop=True)


def _unknown_categories_message(parts: ModelParts, field: str, unknown: list[str]) -> str:
    """Unknown condition categories: close matches first, then the valid ones (alphabetical, at most 50)."""
    msg = f"Unknown {field!r} categories {unknown[:5]}{' …' if len(unknown) > 5 else ''}"
    hints = parts.vocab.suggestions(field, unknown[:5])
    if hints:
        msg += "; did you mean " + "; ".join(f"{close} for {u!r}" for u, close in hints.items()) + "?"
    valid = sorted(parts.vocab.categories(field), key=str.lower)
    shown = 50
    msg += f" The model has {len(valid)} {field!r} categories; valid ones: {valid[:shown]}"
    if len(valid) > shown:
        msg += f" … (all of them: `model.vocab.categories({field!r})`)"
    return msg + "."


def _gene_prompt(parts: ModelParts, gene_prompts, n: int) -> tuple[GeneSegments, list[int]] | None:
    if not gene_prompts:
        return None
    index = parts.vocab.gene_index()
    unknown = [g for g in gene_prompts if g not in index]
    if unknown:
        msg = f"`gene_prompts` genes {unknown[:5]} are not model genes."
        raise ValueError(msg)
    bad = {g: lv for g, lv in gene_prompts.items() if not (isinstance(lv, int | np.integer) and 0 <= lv <= 10)}
    if bad:
        msg = f"`gene_prompts` levels must be integers 0..10, got {bad}."
        raise ValueError(msg)
    present = [(index[g], int(lv)) for g, lv in gene_prompts.items() if lv > 0]
    banned = [index[g] for g, lv in gene_prompts.items() if lv == 0]
    ids = np.tile(np.array([i for i, _ in present], dtype=np.int64), n)
    levels = np.tile(np.array([lv for _, lv in present], dtype=np.int64), n)
    offsets = np.arange(n + 1, dtype=np.int64) * len(present)
    return GeneSegments(ids, levels, offsets), banned


def _cell_matrices(parts: ModelParts, out, n_cells: int, within: np.random.Generator | None):
    """``(levels, values)``: cells x model genes (CSR) of generated sentences; values de-binned (``debin``)."""
    from scipy import sparse

    gene_ids = np.asarray(parts.vocab.gene_ids)
    column = np.full(len(parts.vocab), -1, dtype=np.int64)
    column[gene_ids] = np.arange(len(gene_ids))
    rows = np.repeat(np.arange(n_cells), np.diff(out.offsets))
    keep = column[out.ids] >= 0
    where = (rows[keep], column[out.ids[keep]])
    shape = (n_cells, len(gene_ids))
    levels = sparse.csr_matrix((out.levels[keep].astype(np.float32), where), shape=shape)
    values = sparse.csr_matrix(
        (debin(parts.debin_table, out.ids[keep], out.levels[keep], rng=within), where), shape=shape
    )
    return levels, values


def _type_fields(parts: ModelParts, condition_fields: list[str]) -> dict[str, str]:
    """``{condition field: column of annotate's result}`` for the cell-type fields the conditions name."""
    fields = parts.annotation_fields
    column = {fields[0]: "coarse", fields[-1]: "fine"} if fields else {}
    return {f: column[f] for f in fields if f in condition_fields}


def _check_redraws(parts: ModelParts, redraws: int, table: pd.DataFrame, legacy: bool) -> dict[str, str]:
    """Refuse ``redraws`` that cannot be done; returns the checks to make (empty: none)."""
    if isinstance(redraws, bool) or not isinstance(redraws, int | np.integer) or redraws < 0:
        msg = f"`redraws` must be an integer >= 0 (0: none; None: the model's default), got {redraws!r}."
        raise ValueError(msg)
    if redraws == 0:
        return {}
    if legacy:
        msg = "`legacy=True` samples exactly as the original, which never redraws a cell: pass redraws=0."
        raise ValueError(msg)
    checks = _type_fields(parts, [f for f in table.columns if table[f].notna().any()])
    if not checks:
        msg = (
            f"`redraws` re-checks each cell's requested cell type with the model's own annotation, but the conditions "
            f"name none of its cell-type fields {parts.annotation_fields}: add one to `conditions` or pass redraws=0."
        )
        raise ValueError(msg)
    parts.require_task("annotation", "generate(redraws=...)")
    return checks


def _confirmed(
    parts: ModelParts, values, table: pd.DataFrame, checks: dict[str, str], *, batch_size: int, device
) -> np.ndarray:
    """Whether the model's own annotation of each generated cell returns the cell types its condition asked for."""
    from scmulan.model._annotation import annotate

    obs = table.reset_index(drop=True)
    obs.index = obs.index.astype(str)
    cells = AnnData(X=values, obs=obs, var=pd.DataFrame(index=parts.vocab.genes))
    with warnings.catch_warnings():  # a cell with no model gene gets no label: it is simply not confirmed
        warnings.simplefilter("ignore", UserWarning)
        labels = annotate(parts, cells, batch_size=batch_size, device=device, progress=False, calibrated=False)
    ok = np.ones(len(obs), dtype=bool)
    for field, column in checks.items():
        asked = obs[field]
        got = labels[column].astype(object).to_numpy()
        ok &= asked.isna().to_numpy() | (got == asked.astype(str).to_numpy())
    return ok


def _redraw_seed(seed: int, round_: int) -> int:
    """The seed of redraw round ``round_`` (1, 2, …) of a call with ``seed``: independent of the first draw's."""
    return int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])


def _replace_rows(matrix, rows: np.ndarray, new):
    """``matrix`` (CSR) with its rows ``rows`` replaced by the rows of ``new``, in order."""
    from scipy import sparse

    keep = np.setdiff1d(np.arange(matrix.shape[0]), rows)
    order = np.argsort(np.concatenate([keep, rows]), kind="stable")
    return sparse.vstack([matrix[keep], new], format="csr")[order]


def fit_debinning(parts: ModelParts, adata: AnnData, *, chunk_size: int = 4096) -> np.ndarray:
    """Learn the de-binning table of :meth:`generate` from log-normalised reference cells.

    Use it for a model imported from the original checkpoint, which carries no table. Training fits one from its
    training cells.

    Parameters
    ----------
    adata
        Log-normalised reference cells.
    chunk_size
        Cells read at a time.
    """
    source = query_source(parts, adata, context=False, where="fit_debinning")
    return debinning_table((X for _, X, _ in source.iter_chunks(chunk_size)), source.col_token, len(parts.vocab))


def _gene_count_source(parts: ModelParts, gene_counts: str | None, legacy: bool) -> str:
    """``"reference"`` or ``"model"``: where generated cells get their gene counts (see :func:`generate`)."""
    if gene_counts is None:
        return "reference" if parts.gene_counts is not None and not legacy else "model"
    if gene_counts not in ("reference", "model"):
        msg = f"`gene_counts` must be 'reference', 'model' or None (the model's default), got {gene_counts!r}."
        raise ValueError(msg)
    if gene_counts == "reference" and legacy:
        msg = "`legacy=True` samples exactly as the original, whose cells end where it stops them: use gene_counts='model'."
        raise ValueError(msg)
    if gene_counts == "reference" and parts.gene_counts is None:
        msg = (
            "This model recorded no gene counts of training cells (the original checkpoint, or a model trained before "
            "they were recorded): use gene_counts='model', or train it again to record them."
        )
        raise ValueError(msg)
    return gene_counts


def _check_guidance(guidance: float, legacy: bool) -> None:
    if isinstance(guidance, bool) or not isinstance(guidance, int | float | np.number) or not guidance >= 0:
        msg = f"`guidance` must be a number >= 0 (1: none; None: the model's default), got {guidance!r}."
        raise ValueError(msg)
    if legacy and guidance != 1.0:
        msg = f"`legacy=True` samples exactly as the original, without guidance: use guidance=1 (got {guidance})."
        raise ValueError(msg)


def _check_level_guidance(
    level_guidance: float, guidance_steps: int | None, *, next_entity: bool, legacy: bool
) -> None:
    is_number = not isinstance(level_guidance, bool) and isinstance(level_guidance, int | float | np.number)
    if not is_number or not level_guidance >= 0:
        msg = f"`level_guidance` must be a number >= 0 (1: none), got {level_guidance!r}."
        raise ValueError(msg)
    if level_guidance != 1.0 and not next_entity:
        msg = (
            f"`level_guidance={level_guidance}` guides the level head of next-entity models; this model "
            f"{'is sampled as the original (legacy=True)' if legacy else 'has none (set objective)'}: use level_guidance=1."
        )
        raise ValueError(msg)
    if guidance_steps is not None and (
        isinstance(guidance_steps, bool) or not isinstance(guidance_steps, int | np.integer) or guidance_steps < 0
    ):
        msg = f"`guidance_steps` must be an integer >= 0 (None: guide every gene), got {guidance_steps!r}."
        raise ValueError(msg)


def _check_sampling(
    *, temperature: float, gamma: float, top_k: int | None, top_p: float | None, batch_size: int
) -> None:
    """Refuse sampling controls that would fail (or silently misbehave) deep inside the decoding loop."""
    if not temperature > 0:
        msg = f"`temperature` must be > 0, got {temperature}."
        raise ValueError(msg)
    if not gamma >= 0:
        msg = f"`gamma` (the factor on the probability of ending a cell) must be >= 0, got {gamma}."
        raise ValueError(msg)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1):
        msg = f"`top_k` must be None (no filtering) or an integer >= 1, got {top_k!r}."
        raise ValueError(msg)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        msg = f"`top_p` must be None (no filtering) or a number in (0, 1], got {top_p!r}."
        raise ValueError(msg)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        msg = f"`batch_size` must be an integer >= 1, got {batch_size!r}."
        raise ValueError(msg)
