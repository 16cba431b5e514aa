"""Fine-tuning a pretrained model on another reference with fine types it has never seen (issue: annotation recipe).

The pretrained model learns 6 of the atlas's 9 fine types from one sample of cells; fine-tuning on a second, disjoint
sample that has all 9 adds the 3 new types to the vocabulary and must learn them: held-out macro-F1 over the new types
far above what a model that never predicts them (0) or predicts one of them for everything gets.
"""

import warnings

import numpy as np
import pytest

import scmulan

pytestmark = pytest.mark.slow


def test_finetune_learns_new_fine_types_from_another_reference():
    from sklearn.metrics import f1_score

    data = scmulan.datasets.synthetic_atlas(
        n_cells=1400, n_genes=200, n_coarse_types=3, n_fine_per_coarse=3, marker_strength=2.0, seed=3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scmulan.pp.prepare(data)
    fine = data.obs["cell_type"].astype(str).to_numpy()
    new_types = sorted(np.unique(fine))[::3]  # one new fine type per coarse type
    perm = np.random.default_rng(0).permutation(data.n_obs)
    first, second, test = perm[:500], perm[500:1100], perm[1100:]
    pre = data[np.sort(first[~np.isin(fine[first], new_types)])].copy()
    scmulan.SCMULAN.setup_anndata(pre, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN(pre, config="tiny")
    model.train(max_epochs=8, train_size=1.0, seed=0, enable_progress_bar=False)
    assert not set(new_types) & set(model.vocab.categories("cell_type"))

    ref = data[np.sort(second)].copy()
    scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model.finetune(ref, max_epochs=8, seed=0, enable_progress_bar=False)
    assert set(new_types) <= set(model.vocab.categories("cell_type"))
    assert model.calibration_ is not None  # fine-tuning calibrates on its own validation cells

    query = data[np.sort(test)].copy()
    truth = query.obs["cell_type"].astype(str).to_numpy()
    query.obs = query.obs[[]]
    pred = model.annotate(query, progress=False)["fine"].astype(str).to_numpy()
    f1_new = f1_score(truth, pred, labels=new_types, average="macro", zero_division=0)
    one_for_all = f1_score(truth, np.full_like(truth, new_types[0]), labels=new_types, average="macro")
    assert f1_new > max(0.5, 3 * one_for_all), (f1_new, one_for_all)
