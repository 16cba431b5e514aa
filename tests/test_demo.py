"""``python -m scmulan.demo`` (what ``make demo`` runs) writes everything it announces."""

import anndata as ad
import numpy as np
import pytest

import scmulan
from scmulan import demo


def test_demo_writes_annotated_cells_figures_and_a_loadable_model(tmp_path, capsys):
    scores = demo.run(tmp_path, epochs=1, quiet=True)
    out = capsys.readouterr().out
    assert "held-out annotation" in out
    assert "[6/6]" in out
    for level in ("coarse", "fine"):
        assert 0.0 <= scores[level]["accuracy"] <= 1.0
        assert 0.0 < scores[level]["majority_baseline"] < 1.0
    assert (tmp_path / "umap_scmulan.png").stat().st_size > 0
    assert (tmp_path / "generated_vs_real.png").stat().st_size > 0
    import json

    recorded = json.loads((tmp_path / "scores.json").read_text())
    assert recorded["fine"]["macro_f1"] == scores["fine"]["macro_f1"]
    assert {"commit", "threads", "seed", "epochs", "config", "torch"} <= set(recorded["provenance"])
    assert 0.0 <= recorded["fine"]["ece"] <= 1.0
    assert "| fine (10 types) |" in demo.table(recorded)
    query = ad.read_h5ad(tmp_path / "pbmc_query_annotated.h5ad")
    assert query.n_obs == 140  # the held-out 20 % of the 700 PBMCs
    assert {"scmulan_coarse", "scmulan_fine", "scmulan_confidence"} <= set(query.obs.columns)
    assert query.obsm["X_scmulan"].shape[0] == query.n_obs
    # the labels the demo wrote are those of the model it saved
    model = scmulan.SCMULAN.load(tmp_path / "model")
    again = model.annotate(query, progress=False)
    np.testing.assert_array_equal(again["fine"].astype(str), query.obs["scmulan_fine"].astype(str))


def test_demo_command_line_rejects_unknown_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--outdir", str(tmp_path), "--config", "huge", "--epochs", "1"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
