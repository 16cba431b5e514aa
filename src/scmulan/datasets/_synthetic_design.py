"""The hidden parameters of a synthetic atlas: names, the cell-type hierarchy, proportions and log-expression effects.

:func:`draw_design` is the only entry point. Every effect is a table of log fold changes, one row per category and
one column per gene; a cell's log-mean expression is the sum of the rows its metadata selects (see
:func:`~scmulan.datasets._synthetic_counts.sample_counts`).
"""

from dataclasses import dataclass

import numpy as np

from ._names import (
    AGES,
    SEXES,
    coarse_names,
    disease_names,
    fine_names,
    gene_symbols,
    organ_names,
    region_names,
    technology_names,
)

# Sizes of the gene sets that carry the non-cell-type effects (drawn from the background genes).
N_SEX_GENES = 2  # per sex
N_ORGAN_GENES = 6
N_REGION_GENES = 4
N_AGE_GENES = 10
N_DISEASE_GENES = 12
MIN_BACKGROUND_GENES = 10

# Log-normal spread of the baseline gene abundances; sets how many genes a cell expresses.
BASE_LOG_SD = 1.6
# Known sequencing technologies: (library-size factor, spread of log library size, dropout, NB shape factor).
# Unknown ones are drawn at random. Library factors and dropout differences scale with `batch_strength`.
TECHNOLOGY_PROFILES = {
    "10X": (1.0, 0.35, 0.05, 1.0),
    "Smart-seq2": (2.5, 0.55, 0.20, 0.5),
    "Drop-seq": (0.5, 0.45, 0.10, 1.5),
}


def required_genes(n_coarse: int, n_fine: int, n_coarse_markers: int, n_fine_markers: int) -> int:
    """Smallest number of genes that holds all marker sets, the sex genes and some background genes."""
    return n_coarse * n_coarse_markers + n_fine * n_fine_markers + 2 * N_SEX_GENES + MIN_BACKGROUND_GENES


@dataclass
class AtlasDesign:
    """Names, proportions and log-expression effects of one synthetic atlas (arrays have genes as columns)."""

    genes: list[str]
    organs: list[str]
    regions: list[str]
    region_organ: np.ndarray  # (n_regions,) organ of each region
    coarse: list[str]
    fine: list[str]
    fine_coarse: np.ndarray  # (n_fine,) coarse parent of each fine type
    technologies: list[str]
    diseases: list[str]  # "Healthy" first
    ages: list[int]
    organ_weights: np.ndarray  # (n_organs,)
    region_fine_weights: np.ndarray  # (n_regions, n_fine), rows sum to 1; zero where the organ lacks the type
    organ_technology_weights: np.ndarray  # (n_organs, n_technologies)
    disease_weights: np.ndarray  # (n_diseases,)
    fine_effect: np.ndarray  # (n_fine, n_genes): baseline + coarse programme + fine markers
    region_effect: np.ndarray  # (n_regions, n_genes): organ + region genes
    sex_age_effect: np.ndarray  # (n_sexes * n_ages, n_genes), row = sex * n_ages + age
    disease_effect: np.ndarray  # (n_diseases * n_coarse, n_genes), row = disease * n_coarse + coarse
    technology_effect: np.ndarray  # (n_technologies, n_genes)
    nb_shape: np.ndarray  # (n_technologies, n_genes): negative-binomial shape (1 / overdispersion)
    technology_library: np.ndarray  # (n_technologies,) log library-size offset
    technology_library_sd: np.ndarray  # (n_technologies,)
    technology_dropout: np.ndarray  # (n_technologies,) extra zero-inflation of lowly expressed entries
    gene_sets: dict  # JSON-friendly: markers and the genes behind each non-cell-type effect


def _names(idx: np.ndarray, genes: list[str]) -> list[str]:
    return [genes[i] for i in np.sort(idx)]


def _cell_types(
    rng: np.random.Generator,
    genes: list[str],
    order: np.ndarray,
    *,
    n_coarse: int,
    n_fine_per: int,
    n_cm: int,
    n_fm: int,
    strength: float,
) -> tuple:
    """Coarse programmes and fine markers: disjoint gene blocks taken from the front of `order`."""
    coarse = coarse_names(n_coarse)
    fine = [f for c in coarse for f in fine_names(c, n_fine_per)]
    fine_coarse = np.repeat(np.arange(n_coarse), n_fine_per)
    n_genes = len(genes)
    base = rng.normal(0.0, BASE_LOG_SD, n_genes)
    effect = np.tile(base, (len(fine), 1))
    coarse_markers, fine_markers = {}, {}
    for c in range(n_coarse):
        block = order[c * n_cm : (c + 1) * n_cm]
        # A strong shared programme: every fine type of the coarse type switches the block on.
        effect[np.ix_(fine_coarse == c, block)] += strength * rng.normal(2.2, 0.4, n_cm).clip(min=1.0)
        coarse_markers[coarse[c]] = _names(block, genes)
    start = n_coarse * n_cm
    for f in range(len(fine)):
        block = order[start + f * n_fm : start + (f + 1) * n_fm]
        fold = strength * rng.uniform(2.0, 3.0, n_fm)
        effect[f, block] += fold
        # Siblings share part of each marker, so fine types of one coarse type overlap.
        siblings = np.flatnonzero((fine_coarse == fine_coarse[f]) & (np.arange(len(fine)) != f))
        effect[np.ix_(siblings, block)] += fold * rng.uniform(0.0, 0.5, (len(siblings), n_fm))
        fine_markers[fine[f]] = _names(block, genes)
    return coarse, fine, fine_coarse, effect, {"coarse": coarse_markers, "fine": fine_markers}


def _hosting(rng: np.random.Generator, n_organs: int, n_regions_per: int, n_fine: int) -> tuple:
    """Which fine types each organ hosts, and in which proportions per region."""
    hosts = rng.random((n_organs, n_fine)) < 0.7
    for f in np.flatnonzero(~hosts.any(0)):  # every fine type lives somewhere
        hosts[rng.integers(n_organs), f] = True
    for o in np.flatnonzero(~hosts.any(1)):  # every organ hosts something
        hosts[o, rng.integers(n_fine)] = True
    organ_fine = np.where(hosts, rng.dirichlet(np.full(n_fine, 3.0), n_organs), 0.0)
    region_organ = np.repeat(np.arange(n_organs), n_regions_per)
    region_fine = organ_fine[region_organ] * np.exp(rng.normal(0.0, 0.5, (len(region_organ), n_fine)))
    region_fine /= region_fine.sum(1, keepdims=True)
    return hosts, region_organ, region_fine


def _technologies(rng: np.random.Generator, n_tech: int, n_genes: int, base_shape: np.ndarray, strength: float):
    """Per technology: gene-wise log-effects, NB shapes, library-size offset and spread, dropout."""
    names = technology_names(n_tech)
    # A random profile is drawn for every technology (used only for the unnamed ones), so the random stream
    # does not depend on which names are known.
    profiles = np.array(
        [
            TECHNOLOGY_PROFILES.get(
                t, (np.exp(rng.normal(0, 0.5)), rng.uniform(0.3, 0.55), rng.uniform(0.03, 0.2), rng.uniform(0.5, 1.5))
            )
            for t in names
        ]
    )
    library = strength * np.log(profiles[:, 0])
    dropout = profiles[0, 2] + strength * (profiles[:, 2] - profiles[0, 2])
    shape = base_shape[None, :] * profiles[:, 3:4] ** min(strength, 1.0)
    effect = rng.normal(0.0, 0.25 * strength, (n_tech, n_genes))
    return names, effect, shape, library, profiles[:, 1], dropout.clip(0.0, 0.9)


def draw_design(
    rng: np.random.Generator,
    *,
    n_genes: int,
    n_organs: int,
    n_regions_per_organ: int,
    n_coarse_types: int,
    n_fine_per_coarse: int,
    n_technologies: int,
    n_diseases: int,
    n_coarse_markers: int,
    n_fine_markers: int,
    marker_strength: float,
    batch_strength: float,
    metadata_strength: float = 1.0,
) -> AtlasDesign:
    """Draw every hidden parameter of a synthetic atlas from `rng` (arguments are validated by the caller)."""
    genes = gene_symbols(n_genes)
    order = rng.permutation(n_genes)  # marker blocks are scattered over the gene names
    coarse, fine, fine_coarse, fine_effect, markers = _cell_types(
        rng,
        genes,
        order,
        n_coarse=n_coarse_types,
        n_fine_per=n_fine_per_coarse,
        n_cm=n_coarse_markers,
        n_fm=n_fine_markers,
        strength=marker_strength,
    )
    n_fine = len(fine)

    n_markers = n_coarse_types * n_coarse_markers + n_fine * n_fine_markers
    sex_idx = order[n_markers : n_markers + 2 * N_SEX_GENES].reshape(2, N_SEX_GENES)
    background = order[n_markers + 2 * N_SEX_GENES :]

    taken = 0

    def pick(k: int) -> np.ndarray:
        """The next `k` background genes: disjoint sets while the background lasts, then reused cyclically."""
        nonlocal taken
        k = min(k, len(background))
        idx = background[np.arange(taken, taken + k) % len(background)]
        taken += k
        return idx

    organs = organ_names(n_organs)
    hosts, region_organ, region_fine = _hosting(rng, n_organs, n_regions_per_organ, n_fine)
    regions = [r for o in organs for r in region_names(o, n_regions_per_organ)]
    region_effect = np.zeros((len(regions), n_genes))
    organ_genes, region_genes = {}, {}
    for o, organ in enumerate(organs):
        idx = pick(N_ORGAN_GENES)
        region_effect[np.ix_(region_organ == o, idx)] += metadata_strength * rng.normal(0.0, 1.0, len(idx))
        organ_genes[organ] = _names(idx, genes)
    for r, region in enumerate(regions):
        idx = pick(N_REGION_GENES)
        region_effect[r, idx] += metadata_strength * rng.normal(0.0, 0.8, len(idx))
        region_genes[region] = _names(idx, genes)

    # Sex: each sex's genes are switched off in the other sex. Age: a smooth (linear) trend on a few genes.
    ages = list(AGES)
    age_z = (np.asarray(ages, dtype=float) - np.mean(ages)) / 25.0
    age_idx = pick(N_AGE_GENES)
    age_slope = rng.normal(0.0, 0.6, len(age_idx))
    sex_age_effect = np.zeros((len(SEXES) * len(ages), n_genes))
    for s in range(len(SEXES)):
        for a, z in enumerate(age_z):
            row = sex_age_effect[s * len(ages) + a]
            row[sex_idx[1 - s]] = -6.0
            row[age_idx] = age_slope * z
    fine_effect[:, sex_idx.ravel()] += 1.5  # sex genes are well expressed in their own sex

    diseases = disease_names(n_diseases)
    disease_effect = np.zeros((len(diseases) * n_coarse_types, n_genes))
    disease_genes, disease_cell_types = {}, {}
    n_affected = (n_coarse_types + 1) // 2  # about half of the coarse types
    for d in range(1, len(diseases)):
        idx = pick(N_DISEASE_GENES)
        affected = np.sort(rng.choice(n_coarse_types, size=n_affected, replace=False))
        fold = rng.choice([-1.0, 1.0], len(idx)) * rng.uniform(0.7, 1.5, len(idx))
        disease_effect[np.ix_(d * n_coarse_types + affected, idx)] += fold
        disease_genes[diseases[d]] = _names(idx, genes)
        disease_cell_types[diseases[d]] = [coarse[c] for c in affected]
    disease_weights = np.array([0.6] + [0.4 / n_diseases] * n_diseases) if n_diseases else np.ones(1)

    base_shape = np.exp(rng.normal(np.log(2.0), 0.5, n_genes))
    technologies, tech_effect, nb_shape, tech_lib, tech_lib_sd, tech_dropout = _technologies(
        rng, n_technologies, n_genes, base_shape, batch_strength
    )
    gene_sets = {
        "markers": markers,
        "sex_genes": {sex: _names(sex_idx[s], genes) for s, sex in enumerate(SEXES)},
        "organ_genes": organ_genes,
        "region_genes": region_genes,
        "age_genes": _names(age_idx, genes),
        "disease_genes": disease_genes,
        "disease_cell_types": disease_cell_types,
        "organ_cell_types": {organ: [fine[f] for f in np.flatnonzero(hosts[o])] for o, organ in enumerate(organs)},
    }
    return AtlasDesign(
        genes=genes,
        organs=organs,
        regions=regions,
        region_organ=region_organ,
        coarse=coarse,
        fine=fine,
        fine_coarse=fine_coarse,
        technologies=technologies,
        diseases=diseases,
        ages=ages,
        organ_weights=rng.dirichlet(np.full(n_organs, 5.0)),
        region_fine_weights=region_fine,
        organ_technology_weights=rng.dirichlet(np.full(n_technologies, 3.0), n_organs),
        disease_weights=disease_weights,
        fine_effect=fine_effect,
        region_effect=region_effect,
        sex_age_effect=sex_age_effect,
        disease_effect=disease_effect,
        technology_effect=tech_effect,
        nb_shape=nb_shape,
        technology_library=tech_lib,
        technology_library_sd=tech_lib_sd,
        technology_dropout=tech_dropout,
        gene_sets=gene_sets,
    )
