from pathlib import Path

import scanpy as sc

from scmulan.pl._utils import figure_path


def test_figure_path_follows_scanpy(tmp_path):
    figdir = Path(sc.settings.figdir)
    ext = sc.settings.file_format_figs
    assert figure_path("umap", True) == figdir / f"umap{sc.settings.plot_suffix}.{ext}"
    assert figure_path("umap", "_pbmc.pdf") == figdir / f"umap_pbmc{sc.settings.plot_suffix}.pdf"


def test_figure_path_with_folder_is_exact(tmp_path):
    assert figure_path("umap", str(tmp_path / "fig.png")) == tmp_path / "fig.png"
    assert figure_path("umap", tmp_path / "fig.pdf") == tmp_path / "fig.pdf"
    assert figure_path("umap", tmp_path / "fig").suffix == f".{sc.settings.file_format_figs}"
