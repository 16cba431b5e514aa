"""Draw the example c-sentences of ``docs/csentences.md`` into ``docs/_static/csentence.png``.

Run by ``docs/conf.py`` at build time (matplotlib with the Agg backend); also runnable on its own::

    python docs/_scripts/make_csentence_figure.py [OUTPUT.png]

The figure uses the worked example of the page: one CD4 T cell with eight expressed genes. Its levels
are computed here with the c-sentence rule (ten equal-width bins between 0 and the cell's maximum,
``digitize(v, linspace(0, max, 11), right=True)``), so the picture and the rule cannot drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

#: The worked example: log-normalised expression (``normalize_total(1e4)`` + ``log1p``) of the cell's
#: expressed model genes, in gene-set (alphabetical) order. Genes with value 0 are not in the sentence.
EXAMPLE = {
    "CCR7": 0.98,
    "CD2": 3.01,
    "CD3D": 2.31,
    "CD3E": 1.97,
    "FTL": 3.44,
    "IL7R": 1.58,
    "LTB": 2.87,
    "MALAT1": 4.05,
}
#: The order the genes take in the drawn training sentences (training shuffles gene order; inference prompts list
#: them in descending gene-set order).
SHUFFLED = ["LTB", "CD3D", "MALAT1", "CCR7", "CD2", "IL7R", "FTL", "CD3E"]
METADATA = {"organ": "Blood", "region": "PBMC", "coarse cell type": "T cell", "cell type": "CD4 T cell"}

COLOURS = {"gene": "#4C72B0", "metadata": "#DD8452", "task": "#55A868", "special": "#8C8C8C"}
LABELS = {"gene": "gene", "metadata": "metadata", "task": "task prompt", "special": "special"}


def levels(values: np.ndarray) -> np.ndarray:
    """Levels 1..10 of one cell's expressed values (all > 0): the cell maximum gets 10."""
    edges = np.linspace(0.0, values.max(), 11)
    return np.digitize(values, edges, right=True)


def example_levels() -> dict[str, int]:
    """The level of every expressed gene of the worked example."""
    lv = levels(np.array(list(EXAMPLE.values())))
    return dict(zip(EXAMPLE, lv.tolist(), strict=True))


def _sentences() -> list[tuple[str, list[tuple[str, str, int]], int]]:
    """(title, [(token, kind, level)], length of the prompt) for the three tasks."""
    lv = example_levels()
    genes = [(g, "gene", lv[g]) for g in SHUFFLED]
    meta = {k: (v, "metadata", 0) for k, v in METADATA.items()}
    end = ("<E>", "special", 0)
    annotation = [*genes, ("<annotate>", "task", 0), meta["coarse cell type"], meta["cell type"], end]
    metadata = [*genes, ("<metadata>", "task", 0), meta["organ"], meta["region"], end]
    generation = [meta["organ"], meta["cell type"], ("<generate>", "task", 0), *genes, end]
    return [
        ("annotation", annotation, len(genes) + 1),
        ("metadata", metadata, len(genes) + 1),
        ("generation", generation, 3),
    ]


def draw(path: Path) -> Path:
    """Draw the figure to ``path`` (PNG) and return it."""
    rows = _sentences()
    n_max = max(len(tokens) for _, tokens, _ in rows)
    box_w, gap, box_h, bar_max = 1.0, 0.12, 0.55, 0.9
    row_h = box_h + bar_max + 0.75
    fig, ax = plt.subplots(figsize=(0.98 * n_max + 1.6, row_h * len(rows) * 0.95 + 0.6), dpi=150)
    for r, (title, tokens, n_prompt) in enumerate(rows):
        y0 = (len(rows) - 1 - r) * row_h
        ax.text(-0.25, y0 + box_h / 2, title, ha="right", va="center", fontsize=10, fontweight="bold")
        for i, (token, kind, level) in enumerate(tokens):
            x = i * (box_w + gap)
            ax.add_patch(
                FancyBboxPatch(
                    (x, y0),
                    box_w,
                    box_h,
                    boxstyle="round,pad=0,rounding_size=0.08",
                    facecolor=COLOURS[kind],
                    edgecolor="none",
                    alpha=0.9,
                )
            )
            size = 7.5 if len(token) <= 8 else 6.4
            ax.text(x + box_w / 2, y0 + box_h / 2, token, ha="center", va="center", color="white", fontsize=size)
            bar_y = y0 + box_h + 0.06
            h = bar_max * level / 10
            ax.add_patch(plt.Rectangle((x + 0.3, bar_y), box_w - 0.6, max(h, 0.02), color="#333333", alpha=0.75))
            ax.text(x + box_w / 2, bar_y + h + 0.04, str(level), ha="center", va="bottom", fontsize=7)
        split = n_prompt * (box_w + gap) - gap / 2
        ax.plot([split, split], [y0 - 0.12, y0 + box_h + bar_max + 0.3], color="black", lw=1, ls="--")
        ax.text(split - 0.08, y0 - 0.22, "prompt", ha="right", va="top", fontsize=8, style="italic")
        ax.text(split + 0.08, y0 - 0.22, "the model continues", ha="left", va="top", fontsize=8, style="italic")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    ax.legend(
        [*handles, plt.Rectangle((0, 0), 1, 1, color="#333333", alpha=0.75)],
        [*LABELS.values(), "level (0-10)"],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=5,
        frameon=False,
        fontsize=8,
    )
    ax.set_xlim(-2.0, n_max * (box_w + gap))
    ax.set_ylim(-0.55, len(rows) * row_h - 0.3)
    ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "_static" / "csentence.png"
    print(draw(out))
    print(example_levels())
