import logging
import math
import time
from numbers import Integral, Real

import numpy as np
import pandas as pd
from anndata import AnnData

from ._names import SEXES
from ._synthetic_counts import sample_counts
from ._synthetic_design import AtlasDesign, draw_design, required_genes

logger = logging.getLogger(__name__)

# Median library size per gene at the default settings (10X); sets how many genes a cell expresses.
COUNTS_PER_GENE = 1.0


# The seed is recorded in `uns` and must survive `write_h5ad`, which stores integers as int64.
MAX_SEED = 2**63 - 1


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        msg = f"`{name}` must be an integer >= {minimum}, got {value!r}."
        raise ValueError(msg)
    return int(value)


def _check_seed(seed: object) -> int:
    seed = _check_int("seed", seed, 0)
    if seed > MAX_SEED:
        msg = (
            f"`seed` must be at most 2**63 - 1 = {MAX_SEED} (it is stored in `uns['synthetic_atlas']` and written to "
            f".h5ad as a 64-bit integer), got {seed}."
        )
        raise ValueError(msg)
    return seed


def _check_real(name: str, value: object, *, positive: bool) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        msg = f"`{name}` must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}."
        raise ValueError(msg)
    return float(value)


def _categorical_rows(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each cell, draw one category from ``weights[rows[cell]]`` (rows of `weights` sum to 1)."""
    cumulative = np.cumsum(weights, axis=1)
    # Dividing by the row total makes the last entry, and any zero-weight tail, exactly 1.0: never drawn.
    cumulative /= cumulative[:, -1:]
    u = rng.random(len(rows))
    return (u[:, None] >= cumulative[rows]).sum(axis=1)


def _draw_cells(rng: np.random.Generator, design: AtlasDesign, n_cells: int) -> dict[str, np.ndarray]:
    """Category codes of every metadata field, per cell."""
    n_regions_per = len(design.regions) // len(design.organs)
    organ = rng.choice(len(design.organs), size=n_cells, p=design.organ_weights)
    region = organ * n_regions_per + rng.integers(n_regions_per, size=n_cells)
    fine = _categorical_rows(rng, design.region_fine_weights, region)
    return {
        "organ": organ,
        "region": region,
        "coarse_cell_type": design.fine_coarse[fine],
        "cell_type": fine,
        "sex": rng.integers(len(SEXES), size=n_cells),
        "age": rng.integers(len(design.ages), size=n_cells),
        "technology": _categorical_rows(rng, design.organ_technology_weights, organ),
        "disease": rng.choice(len(design.diseases), size=n_cells, p=design.disease_weights),
    }


def synthetic_atlas(
    n_cells: int = 2000,
    n_genes: int = 500,
    *,
    n_organs: int = 3,
    n_regions_per_organ: int = 2,
    n_coarse_types: int = 4,
    n_fine_per_coarse: int = 3,
    n_technologies: int = 3,
    n_diseases: int = 2,
    n_coarse_markers: int = 20,
    n_fine_markers: int = 5,
    marker_strength: float = 1.0,
    batch_strength: float = 1.0,
    metadata_strength: float = 1.0,
    library_size: float | None = None,
    seed: int = 0,
) -> AnnData:
    """A synthetic hierarchical single-cell atlas of raw counts, with every scMulan metadata field.

    Counts come from a generative model with known structure, for tests, tutorials and benchmarks:

    - **organs → regions**: each organ has its own regions (names unique across organs). Organs host different
      subsets of the fine cell types in different proportions; regions shift those proportions. Organ and
      region each change a few genes.
    - **coarse → fine cell types**: each coarse type switches on its own block of genes (a strong shared
      programme); each fine type adds a few moderate markers, partly shared with its siblings, so fine types
      of one coarse type overlap.
    - **sex** (``F``/``M``): a few genes per sex, off in the other; **age** (``20 year``, ``45 year``,
      ``70 year``): a smooth trend on a few genes; **disease** (``Healthy`` and `n_diseases` states): genes
      up or down in about half of the coarse types.
    - **technology**: a batch effect — gene-wise multiplicative effects, different library-size distributions,
      overdispersion and dropout. Technologies are unevenly spread over organs, as in real atlases.
    - log-normal library sizes and negative-binomial (gamma-Poisson) noise.

    At the defaults a cell expresses (count > 0) a quarter to a third of the genes, as in real data; a logistic
    regression on log-normalised counts separates the coarse types almost perfectly and the fine types in about
    85 % of held-out cells; cells of one technology are each other's nearest neighbours in PCA more often than
    chance. With many more genes than the defaults the technology effect, which touches every gene, weighs more
    against the fixed number of markers; lower `batch_strength` to compensate. Counts are drawn in blocks of
    rows (never one dense cells x genes array): 100,000 cells x 2,000 genes take about 20 seconds on one core.
    Gene names look like gene symbols and depend only on the gene's position, so atlases of different seeds
    share their genes.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_genes
        Number of genes; at least the marker genes, the sex genes and 10 background genes.
    n_organs
        Number of organs (``"Lung"``, ``"Heart"``, ``"Liver"``, …).
    n_regions_per_organ
        Regions of each organ.
    n_coarse_types
        Number of coarse cell types (``"T cell"``, ``"Myeloid cell"``, …).
    n_fine_per_coarse
        Fine cell types below each coarse type.
    n_technologies
        Number of sequencing technologies (``"10X"``, ``"Smart-seq2"``, ``"Drop-seq"``, …).
    n_diseases
        Disease states besides ``"Healthy"``.
    n_coarse_markers
        Genes in each coarse type's programme.
    n_fine_markers
        Marker genes of each fine type.
    marker_strength
        Multiplies the log fold changes of coarse programmes and fine markers (0: no cell-type signal).
    batch_strength
        Multiplies the technology effects (0: no batch effect).
    metadata_strength
        Multiplies the log fold changes of the organ and region genes (0: organ and region change only which cell
        types are present). At the default, organ and region are weakly written in a cell's genes, as in real data;
        larger values make them easy to predict from expression.
    library_size
        Median total counts per cell for the first technology; `None`: one count per gene (``n_genes``).
    seed
        Seed of :func:`numpy.random.default_rng`, an integer from 0 to 2**63 - 1; the same seed gives the same
        atlas.

    Returns
    -------
    An AnnData with

    - ``X``: raw counts, CSR, float32;
    - ``obs``: categoricals ``organ``, ``region``, ``coarse_cell_type``, ``cell_type``, ``sex``, ``age``,
      ``technology``, ``disease`` (with every category of the design, also those no cell drew);
    - ``var_names``: gene symbols;
    - ``uns['synthetic_atlas']``: ``params`` (the arguments), ``hierarchy`` (fine → coarse), ``organ_regions``,
      ``organ_cell_types`` (fine types each organ hosts), ``markers`` (``coarse`` and ``fine``: type → genes),
      ``sex_genes``, ``organ_genes``, ``region_genes``, ``age_genes``, ``disease_genes`` and
      ``disease_cell_types``.

    Examples
    --------
    >>> import scmulan
    >>> adata = scmulan.datasets.synthetic_atlas(500, 300, seed=1)
    >>> adata.obs["cell_type"].cat.categories[:3].tolist()
    ['CD4 T cell', 'CD8 T cell', 'Regulatory T cell']
    """
    start = time.perf_counter()
    n_cells = _check_int("n_cells", n_cells, 1)
    n_genes = _check_int("n_genes", n_genes, 1)
    sizes = {
        name: _check_int(name, value, minimum)
        for name, value, minimum in [
            ("n_organs", n_organs, 1),
            ("n_regions_per_organ", n_regions_per_organ, 1),
            ("n_coarse_types", n_coarse_types, 1),
            ("n_fine_per_coarse", n_fine_per_coarse, 1),
            ("n_technologies", n_technologies, 1),
            ("n_diseases", n_diseases, 0),
            ("n_coarse_markers", n_coarse_markers, 1),
            ("n_fine_markers", n_fine_markers, 1),
        ]
    }
    marker_strength = _check_real("marker_strength", marker_strength, positive=False)
    batch_strength = _check_real("batch_strength", batch_strength, positive=False)
    metadata_strength = _check_real("metadata_strength", metadata_strength, positive=False)
    library_size = COUNTS_PER_GENE * n_genes if library_size is None else library_size
    library_size = _check_real("library_size", library_size, positive=True)
    seed = _check_seed(seed)
    n_fine = n_coarse_types * n_fine_per_coarse
    needed = required_genes(n_coarse_types, n_fine, n_coarse_markers, n_fine_markers)
    if n_genes < needed:
        msg = (
            f"`n_genes`={n_genes} is too small: {n_coarse_types} coarse types x {n_coarse_markers} markers + "
            f"{n_fine} fine types x {n_fine_markers} markers, the sex genes and some background genes need "
            f"n_genes >= {needed}. Increase `n_genes` or lower `n_coarse_markers`, `n_fine_markers` or the "
            "number of cell types."
        )
        raise ValueError(msg)
    logger.info("generating a synthetic atlas of %d cells x %d genes (seed %d)", n_cells, n_genes, seed)

    rng = np.random.default_rng(seed)
    design = draw_design(
        rng,
        n_genes=n_genes,
        marker_strength=marker_strength,
        batch_strength=batch_strength,
        metadata_strength=metadata_strength,
        **sizes,
    )
    cells = _draw_cells(rng, design, n_cells)
    tech = cells["technology"]
    library = library_size * np.exp(
        design.technology_library[tech] + design.technology_library_sd[tech] * rng.standard_normal(n_cells)
    )
    n_coarse = len(design.coarse)
    effects = [
        (design.fine_effect, cells["cell_type"]),
        (design.region_effect, cells["region"]),
        (design.sex_age_effect, cells["sex"] * len(design.ages) + cells["age"]),
        (design.disease_effect, cells["disease"] * n_coarse + cells["coarse_cell_type"]),
        (design.technology_effect, tech),
    ]
    X = sample_counts(effects, library, (design.nb_shape, tech), design.technology_dropout[tech], rng)

    categories = {
        "organ": design.organs,
        "region": design.regions,
        "coarse_cell_type": design.coarse,
        "cell_type": design.fine,
        "sex": list(SEXES),
        "age": [f"{age} year" for age in design.ages],
        "technology": design.technologies,
        "disease": design.diseases,
    }
    obs = pd.DataFrame(
        {key: pd.Categorical.from_codes(cells[key], categories=cats) for key, cats in categories.items()},
        index=pd.Index([f"cell{i}" for i in range(n_cells)]),
    )
    params = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        **sizes,
        "marker_strength": marker_strength,
        "batch_strength": batch_strength,
        "metadata_strength": metadata_strength,
        "library_size": library_size,
        "seed": seed,
    }
    uns = {
        "params": params,
        "hierarchy": {fine: design.coarse[c] for fine, c in zip(design.fine, design.fine_coarse, strict=True)},
        "organ_regions": {
            organ: [r for r, o in zip(design.regions, design.region_organ, strict=True) if o == i]
            for i, organ in enumerate(design.organs)
        },
        **design.gene_sets,
    }
    adata = AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(design.genes)), uns={"synthetic_atlas": uns})
    logger.info("finished synthetic atlas (%.2fs): %d non-zero counts", time.perf_counter() - start, X.nnz)
    return adata
