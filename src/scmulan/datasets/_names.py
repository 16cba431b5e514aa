"""Names for the synthetic atlas: organs, regions, cell types, technologies, diseases and gene symbols.

Everything here is deterministic and independent of the random seed, so that atlases drawn with different
seeds share their vocabulary (the same gene symbols, the same organ and cell-type names).
"""

from collections.abc import Sequence
from functools import cache

import numpy as np

ORGAN_REGIONS: dict[str, tuple[str, ...]] = {
    "Lung": ("Upper lobe", "Lower lobe", "Bronchus"),
    "Heart": ("Left ventricle", "Right atrium", "Interventricular septum"),
    "Liver": ("Left hepatic lobe", "Right hepatic lobe", "Caudate lobe"),
    "Blood": ("Peripheral blood", "Cord blood"),
    "Brain": ("Prefrontal cortex", "Cerebellum", "Hippocampus"),
    "Kidney": ("Renal cortex", "Renal medulla", "Renal pelvis"),
    "Spleen": ("Red pulp", "White pulp"),
    "Intestine": ("Ileum", "Colon", "Jejunum"),
    "Pancreas": ("Pancreatic head", "Pancreatic tail"),
    "Skin": ("Epidermis", "Dermis"),
    "Bone marrow": ("Iliac crest", "Femoral marrow"),
    "Stomach": ("Gastric fundus", "Gastric antrum"),
}

CELL_TYPES: dict[str, tuple[str, ...]] = {
    "T cell": ("CD4 T cell", "CD8 T cell", "Regulatory T cell", "Gamma-delta T cell"),
    "Myeloid cell": ("Classical monocyte", "Macrophage", "Dendritic cell", "Non-classical monocyte"),
    "Epithelial cell": ("Basal cell", "Secretory cell", "Ciliated cell", "Alveolar type 2 cell"),
    "Stromal cell": ("Fibroblast", "Pericyte", "Smooth muscle cell", "Myofibroblast"),
    "B cell": ("Naive B cell", "Memory B cell", "Plasma cell", "Germinal center B cell"),
    "Endothelial cell": (
        "Arterial endothelial cell",
        "Venous endothelial cell",
        "Capillary endothelial cell",
        "Lymphatic endothelial cell",
    ),
    "NK cell": ("CD56bright NK cell", "CD56dim NK cell", "Adaptive NK cell", "Tissue-resident NK cell"),
    "Neuron": ("Excitatory neuron", "Inhibitory neuron", "Dopaminergic neuron", "Motor neuron"),
    "Glial cell": ("Astrocyte", "Oligodendrocyte", "Oligodendrocyte precursor cell", "Ependymal cell"),
    "Muscle cell": ("Atrial cardiomyocyte", "Ventricular cardiomyocyte", "Skeletal myocyte", "Satellite cell"),
}

TECHNOLOGIES: tuple[str, ...] = ("10X", "Smart-seq2", "Drop-seq", "inDrop", "Seq-Well", "CEL-seq2", "Microwell-seq")
DISEASES: tuple[str, ...] = ("COVID-19", "Fibrosis", "Cancer", "Diabetes", "Asthma", "Hepatitis")
HEALTHY = "Healthy"
AGES: tuple[int, ...] = (20, 45, 70)
SEXES: tuple[str, ...] = ("F", "M")

_CONSONANTS = "BCDFGHKLMNPRSTVZ"
_VOWELS = "AEIOU"
_N_NUMBERS = 9
_SYLLABLES = tuple(c + v for c in _CONSONANTS for v in _VOWELS)
_N_SYMBOLS = len(_SYLLABLES) ** 2 * _N_NUMBERS


def _pick(pool: Sequence[str], n: int, fallback: str) -> list[str]:
    """The first `n` names of `pool`, continued with `fallback.format(i)` (1-based) past its end."""
    return [pool[i] if i < len(pool) else fallback.format(i + 1) for i in range(n)]


def organ_names(n: int) -> list[str]:
    """Names of `n` organs: real organs first, then ``"Organ 13"``, …"""
    return _pick(tuple(ORGAN_REGIONS), n, "Organ {}")


def region_names(organ: str, n: int) -> list[str]:
    """Names of the `n` regions of `organ`, unique across organs."""
    return _pick(ORGAN_REGIONS.get(organ, ()), n, organ + " region {}")


def coarse_names(n: int) -> list[str]:
    """Names of `n` coarse cell types."""
    return _pick(tuple(CELL_TYPES), n, "Cell type {}")


def fine_names(coarse: str, n: int) -> list[str]:
    """Names of the `n` fine cell types below `coarse`, unique across coarse types."""
    return _pick(CELL_TYPES.get(coarse, ()), n, coarse + " subtype {}")


def technology_names(n: int) -> list[str]:
    """Names of `n` sequencing technologies."""
    return _pick(TECHNOLOGIES, n, "Technology {}")


def disease_names(n: int) -> list[str]:
    """``"Healthy"`` followed by `n` disease states."""
    return [HEALTHY, *_pick(DISEASES, n, "Disease {}")]


@cache
def _symbol_order() -> np.ndarray:
    """A fixed pseudo-random order of all symbol codes.

    Codes are sorted by their splitmix64 hash: pure integer arithmetic, so the order never changes with numpy's
    random streams.
    """
    z = np.arange(_N_SYMBOLS, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return np.argsort(z, kind="stable")


def gene_symbols(n: int) -> list[str]:
    """`n` unique gene-symbol-like names (two syllables and a digit, such as ``"KOTA3"``).

    The i-th symbol depends on i only, so the first genes of a larger atlas carry the same names.
    """
    if n > _N_SYMBOLS:
        msg = f"n_genes={n} exceeds the {_N_SYMBOLS} distinct synthetic gene symbols; ask for fewer genes."
        raise ValueError(msg)
    n_syl = len(_SYLLABLES)
    symbols = []
    for code in _symbol_order()[:n].tolist():
        rest, number = divmod(code, _N_NUMBERS)
        first, second = divmod(rest, n_syl)
        symbols.append(f"{_SYLLABLES[first]}{_SYLLABLES[second]}{number + 1}")
    return symbols
