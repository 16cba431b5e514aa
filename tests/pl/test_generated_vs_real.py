import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mudata import MuData

import scmulan


def _snapshot(adata):
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.array(adata.X)
    return x, adata.obs.copy(), adata.var.copy(), set(adata.obsm), set(adata.uns), set(adata.obsp), set(adata.layers)


def _assert_unchanged(adata, snapshot):
    x, obs, var, obsm, uns, obsp, layers = snapshot
    now = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    np.testing.assert_array_equal(now, x)
    assert adata.obs.equals(obs)
    assert adata.var.equals(var)
    assert (set(adata.obsm), set(adata.uns), set(adata.obsp), set(adata.layers)) == (obsm, uns, obsp, layers)


def test_with_groupby_three_panels_and_inputs_unchanged(pbmc, generated):
    pbmc.obs["cell_type"] = pbmc.obs["bulk_labels"]
    real_before, generated_before = _snapshot(pbmc), _snapshot(generated)

    axes = scmulan.pl.generated_vs_real(pbmc, generated, groupby="cell_type", n_pcs=10, show=False)

    assert isinstance(axes, list)
    assert len(axes) == 3
    assert all(isinstance(ax, Axes) for ax in axes)
    shared = pbmc.n_vars - 40
    assert f"({shared} genes)" in axes[0].get_title()
    assert "Pearson r" in axes[0].get_title()
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert all("(r=" in label for label in legend)
    assert {t.get_text() for t in axes[1].get_legend().get_texts()} == {"real", "generated"}
    # every real and generated cell is drawn in the joint UMAP
    assert sum(len(c.get_offsets()) for c in axes[1].collections) == pbmc.n_obs + generated.n_obs
    _assert_unchanged(pbmc, real_before)
    _assert_unchanged(generated, generated_before)


def test_mudata_return_fig_and_save(pbmc, generated, tmp_path):
    path = tmp_path / "gen.png"
    fig = scmulan.pl.generated_vs_real(
        MuData({"rna": pbmc}), generated, n_pcs=10, return_fig=True, save=str(path), show=False
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert path.stat().st_size > 0


def test_per_gene_correlation_is_high_for_noisy_copies(pbmc, generated):
    # means of the noisy copies of real cells follow the real means: the title reports it
    axes = scmulan.pl.generated_vs_real(pbmc, generated, layer=None, n_pcs=5, show=False)
    r = float(axes[0].get_title().rsplit("=", 1)[1])
    assert r > 0.9


def test_errors(pbmc, generated):
    other = generated.copy()
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="share no genes"):
        scmulan.pl.generated_vs_real(pbmc, other, show=False)
    with pytest.raises(ValueError, match=r"real\.obs\['cell_type'\]"):
        scmulan.pl.generated_vs_real(pbmc, generated, groupby="cell_type", show=False)
    with pytest.raises(ValueError, match=r"real\.layers\['levels'\]"):
        scmulan.pl.generated_vs_real(pbmc, generated, layer="levels", show=False)


def test_draws_into_user_axes_and_leaves_the_figure_open(pbmc, generated, tmp_path):
    import matplotlib.pyplot as plt

    pbmc.obs["cell_type"] = pbmc.obs["bulk_labels"]
    fig, ax = plt.subplots(2, 2)  # an array of Axes, as plt.subplots returns; the last one is left empty
    path = tmp_path / "mine.png"
    axes = scmulan.pl.generated_vs_real(
        pbmc, generated, groupby="cell_type", n_pcs=5, ax=ax.ravel()[:3], save=path, show=False
    )
    assert axes == list(ax.ravel()[:3])
    assert "Pearson r" in axes[0].get_title()
    assert sum(len(c.get_offsets()) for c in axes[1].collections) == pbmc.n_obs + generated.n_obs
    assert len(ax[1, 1].collections) == 0
    assert ax[1, 1].get_title() == ""
    assert path.stat().st_size > 0
    assert plt.fignum_exists(fig.number)  # the user's figure is not closed by saving
    plt.close(fig)


def test_ax_must_match_the_panels(pbmc, generated):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3)
    with pytest.raises(ValueError, match="must hold 2 Axes"):
        scmulan.pl.generated_vs_real(pbmc, generated, ax=ax, show=False)
    with pytest.raises(ValueError, match="must hold 2 Axes"):
        scmulan.pl.generated_vs_real(pbmc, generated, ax=ax[0], show=False)
    with pytest.raises(TypeError, match="matplotlib Axes"):
        scmulan.pl.generated_vs_real(pbmc, generated, ax=["a", "b"], show=False)
    assert all(len(a.collections) == 0 for a in ax)  # nothing drawn before the error
    plt.close(fig)
