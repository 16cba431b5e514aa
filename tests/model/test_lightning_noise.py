"""train()/finetune() print none of Lightning's remarks a user cannot act on; those about the user's settings stay."""

from __future__ import annotations

import logging
import re

import pytest

import scmulan

NOISE = (
    r"IterableDataset.*__len__",
    r"LeafSpec",
    r"smaller than the logging interval",
    r"does not have many workers",
    r"GPU available but not used",
    r"exists and is not empty",
    r"LitLogger",
)
BANNERS = ("GPU available:", "TPU available:", "Tip:", "Trainer.fit` stopped", "| Name", "Total params")


@pytest.fixture
def small_model():
    adata = scmulan.datasets.synthetic_atlas(
        n_cells=60, n_genes=100, n_coarse_types=3, n_fine_per_coarse=2, n_coarse_markers=8, n_fine_markers=4
    )
    scmulan.pp.prepare(adata)
    scmulan.SCMULAN.setup_anndata(adata, cell_type_key="cell_type", organ_key="organ")
    return scmulan.SCMULAN(adata, config="tiny"), adata


def _noise(records) -> list[str]:
    return [str(r.message) for r in records if any(re.search(p, str(r.message)) for p in NOISE)]


def test_train_and_finetune_print_no_lightning_noise(small_model, recwarn, capfd, caplog, tmp_path, monkeypatch):
    model, adata = small_model
    # as on a machine with many cores, where Lightning advises more data-loader workers
    from lightning.pytorch.trainer.connectors import data_connector

    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda num_devices: 15)
    # 4 batches of 16: fewer than Lightning's logging interval; a reused checkpoint folder
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False, checkpoint_dir=tmp_path)
    model.finetune(adata, max_epochs=1, batch_size=16, enable_progress_bar=False)
    assert _noise(recwarn.list) == []
    out, err = capfd.readouterr()
    printed = out + err + "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("lightning"))
    for banner in BANNERS:
        assert banner not in printed, printed
    assert model.history_  # it did train


def test_a_warning_about_the_users_own_setting_stays(small_model, recwarn):
    model, _ = small_model
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False, log_every_n_steps=50)
    assert any("smaller than the logging interval" in str(r.message) for r in recwarn.list)


def test_lightning_banners_follow_the_scmulan_logger(small_model, caplog):
    model, _ = small_model
    package = logging.getLogger("scmulan")
    level = package.level
    package.setLevel(logging.INFO)
    try:
        model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    finally:
        package.setLevel(level)
    assert any(r.getMessage().startswith("GPU available:") for r in caplog.records)
    lightning = logging.getLogger("lightning.pytorch")
    assert lightning.level == logging.INFO  # Lightning's own setting, restored after the run
