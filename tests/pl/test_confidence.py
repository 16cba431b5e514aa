import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mudata import MuData

import scmulan


def test_histogram_with_threshold(pbmc):
    ax = scmulan.pl.confidence(pbmc, threshold=0.3, show=False)
    assert isinstance(ax, Axes)
    values = pbmc.obs["scmulan_confidence"].to_numpy()
    expected = np.mean(values[np.isfinite(values)] < 0.3)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(f"{expected:.1%} below" in label for label in labels)
    assert any("5 without confidence" in label for label in labels)
    assert f"{expected:.1%} below 0.3" in ax.get_title()


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_per_group(pbmc, kind):
    ax = scmulan.pl.confidence(pbmc, groupby="scmulan_fine", kind=kind, threshold=0.5, show=False)
    assert isinstance(ax, Axes)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert set(ticks) <= set(pbmc.obs["scmulan_fine"].cat.categories)
    assert len(ticks) == pbmc.obs["scmulan_fine"].nunique()


def test_metadata_key_ax_and_return_fig(pbmc):
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    assert scmulan.pl.confidence(pbmc, "scmulan_organ", ax=ax, show=False) is ax
    fig = scmulan.pl.confidence(pbmc, "scmulan_organ", groupby="scmulan_organ", return_fig=True, show=False)
    assert isinstance(fig, Figure)


def test_show_returns_none(pbmc, monkeypatch):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: shown.append(True))
    assert scmulan.pl.confidence(pbmc, show=True) is None
    assert shown == [True]


def test_save(pbmc, tmp_path):
    import scanpy as sc

    path = tmp_path / "conf.pdf"
    scmulan.pl.confidence(pbmc, save=path, show=False)
    assert path.stat().st_size > 0
    scmulan.pl.confidence(pbmc, save=True, show=False)
    written = list(sc.settings.figdir.glob("confidence*"))
    assert len(written) == 1
    assert written[0].stat().st_size > 0


def test_mudata(pbmc):
    assert isinstance(scmulan.pl.confidence(MuData({"rna": pbmc}), show=False), Axes)


def test_missing_keys_raise(pbmc):
    with pytest.raises(ValueError, match=r"obs\['scmulan_cell_confidence'\].*scmulan\.tl\.annotate"):
        scmulan.pl.confidence(pbmc, "scmulan_cell", show=False)
    with pytest.raises(ValueError, match=r"obs\['tissue'\].*groupby"):
        scmulan.pl.confidence(pbmc, groupby="tissue", show=False)
    with pytest.raises(ValueError, match="kind"):
        scmulan.pl.confidence(pbmc, groupby="scmulan_fine", kind="bar", show=False)
