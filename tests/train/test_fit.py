"""Training runs through the public API: exact resume, bf16 with clipping, NaN handling, other models' checkpoints,
DDP, bad data."""

import os

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

import scmulan
from scmulan.model._training import _expressed_per_row
from scmulan.train import NonFiniteLossError

FIELDS = {"organ_key": "organ", "coarse_cell_type_key": "coarse_cell_type", "cell_type_key": "cell_type"}
RUN = {
    "max_epochs": 3,
    "batch_size": 32,
    "train_size": 0.8,
    "enable_progress_bar": False,
    "checkpoint_every_n_steps": 4,
}


class Crash(RuntimeError):
    pass


class CrashAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            msg = f"simulated crash at step {self.step}"
            raise Crash(msg)


def new_model(atlas, config="tiny", dropout=0.0, **fields):
    data = atlas.copy()
    scmulan.SCMULAN.setup_anndata(data, **(fields or FIELDS))
    torch.manual_seed(0)
    return scmulan.SCMULAN(data, config=config, dropout=dropout)


def _assert_same_weights(got, expected):
    expected, got = expected.module.state_dict(), got.module.state_dict()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def uninterrupted(atlas, tmp_path_factory):
    model = new_model(atlas, dropout=0.1)  # dropout: the random states must be restored too
    model.train(checkpoint_dir=tmp_path_factory.mktemp("full"), **RUN)
    return model


# 240 training cells / 32 = 8 batches per epoch: step 10 is mid-epoch (last checkpoint at step 8, an epoch end),
# step 14 resumes from the mid-epoch checkpoint at step 12, step 17 from the end of epoch 2 (step 16).
@pytest.mark.parametrize("crash_at", [10, 14, 17])
def test_resumed_run_ends_with_the_same_weights(atlas, uninterrupted, tmp_path, crash_at):
    crashed = new_model(atlas, dropout=0.1)
    with pytest.raises(Crash):
        crashed.train(checkpoint_dir=tmp_path, callbacks=[CrashAt(crash_at)], **RUN)
    assert any(p.endswith(".ckpt") for p in os.listdir(tmp_path / "checkpoints"))
    resumed = new_model(atlas, dropout=0.1)
    resumed.train(checkpoint_dir=tmp_path, **RUN)  # the same call again
    _assert_same_weights(resumed, uninterrupted)
    # the history spans the restart: the same logged steps as the uninterrupted run
    assert list(resumed.history_["train_loss_step"].index) == list(uninterrupted.history_["train_loss_step"].index)
    assert len(resumed.history_["train_loss"]) == RUN["max_epochs"]


def test_resuming_without_the_random_states_would_not_be_exact(atlas, uninterrupted, tmp_path):
    """The check above can fail: dropping the saved random states makes the resumed run differ."""
    crashed = new_model(atlas, dropout=0.1)
    with pytest.raises(Crash):
        crashed.train(checkpoint_dir=tmp_path, callbacks=[CrashAt(14)], **RUN)
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        del checkpoint["scmulan_rng_states"]
        torch.save(checkpoint, path)
    resumed = new_model(atlas, dropout=0.1)
    resumed.train(checkpoint_dir=tmp_path, **RUN)
    with pytest.raises(AssertionError):
        _assert_same_weights(resumed, uninterrupted)


def test_resume_with_gradient_accumulation_is_exact(atlas, tmp_path):
    # 8 batches per epoch, 2 per optimiser step: 4 steps per epoch; the crash at step 7 resumes from step 6,
    # in the middle of the second epoch
    run = {**RUN, "accumulate_grad_batches": 2, "checkpoint_every_n_steps": 2}
    full = new_model(atlas, dropout=0.1)
    full.train(checkpoint_dir=tmp_path / "full", **run)
    crashed = new_model(atlas, dropout=0.1)
    with pytest.raises(Crash):
        crashed.train(checkpoint_dir=tmp_path / "run", callbacks=[CrashAt(7)], **run)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["epoch0-step4.ckpt", "step6.ckpt"]
    resumed = new_model(atlas, dropout=0.1)
    resumed.train(checkpoint_dir=tmp_path / "run", **run)
    _assert_same_weights(resumed, full)
    assert list(resumed.history_["train_loss_step"].index) == list(full.history_["train_loss_step"].index)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(atlas, tmp_path):
    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 6:
                with torch.no_grad():
                    pl_module.net.ln_f.weight.fill_(float("nan"))

    model = new_model(atlas)
    with pytest.raises(NonFiniteLossError, match=r"step 6 .*last good checkpoint is .*step4\.ckpt"):
        model.train(checkpoint_dir=tmp_path, callbacks=[Poison()], **RUN)
    saved = torch.load(tmp_path / "checkpoints" / "step4.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in saved.values())


def _all_finite(path):
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(v).all() for v in saved.values())


def test_an_infinite_gradient_with_a_finite_loss_stops_before_the_update(atlas, tmp_path):
    class InfGrad(pl.Callback):  # an overflowing gradient: the loss was finite, the update would write NaN
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 5:
                pl_module.net.ln_f.weight.grad[0] = float("inf")

    model = new_model(atlas)
    with pytest.raises(
        NonFiniteLossError,
        match=r"gradient norm became inf with a finite loss at step 5 .*last good checkpoint is .*step4",
    ):
        model.train(checkpoint_dir=tmp_path, callbacks=[InfGrad()], **RUN)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step4.ckpt"]  # nothing written after the bad step
    assert _all_finite(tmp_path / "checkpoints" / "step4.ckpt")
    assert all(torch.isfinite(v).all() for v in model.module.state_dict().values())  # the update was not made


def test_non_finite_weights_are_never_checkpointed(atlas, tmp_path):
    class PoisonUnusedRow(pl.Callback):  # NaN in the embedding of a token no sentence uses: the loss stays finite
        def __init__(self, row):
            self.row = row

        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 12:
                with torch.no_grad():
                    pl_module.net.entity_embedding.weight[self.row].fill_(float("nan"))

    model = new_model(atlas)
    unused = model.vocab.task_id("<reserved1>")
    with pytest.raises(
        NonFiniteLossError, match=r"weights became non-finite .* at step 12 .*last good checkpoint is .*epoch0-step8"
    ):
        model.train(checkpoint_dir=tmp_path, callbacks=[PoisonUnusedRow(unused)], **RUN)
    saved = sorted(os.listdir(tmp_path / "checkpoints"))
    assert saved == ["epoch0-step8.ckpt", "step4.ckpt"]  # step12.ckpt was refused
    assert all(_all_finite(tmp_path / "checkpoints" / name) for name in saved)


class _ClipRecorder(pl.Callback):
    """Gradient norms before clipping (Lightning's hook) and after it (the step leaves the gradients as it used them)."""

    def __init__(self):
        self.before, self.after, self.optimizers = [], [], []

    @staticmethod
    def _norm(module):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))

    def on_train_start(self, trainer, pl_module):
        for opt in trainer.optimizers:
            self.optimizers.append(opt)
            opt.register_step_post_hook(lambda *_: self.after.append(self._norm(pl_module.net)))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append(self._norm(pl_module.net))


def test_bf16_mixed_precision_with_fused_adamw_and_clipping_trains(atlas, monkeypatch):
    """The GPU default (bf16-mixed, fused AdamW, clipping) on CPU: Lightning's plugin alone refuses to clip there."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from scmulan.train import CSentenceTrainingPlan

    monkeypatch.setattr(CSentenceTrainingPlan, "_fused_adamw", lambda self: True)  # what CUDA gets
    plugins = []

    class Plugin(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            plugins.append(trainer.precision_plugin)

    model = new_model(atlas)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    recorder = _ClipRecorder()
    max_norm = 0.05
    model.train(
        max_epochs=1,
        batch_size=32,
        train_size=0.8,
        precision="bf16-mixed",
        accelerator="cpu",
        gradient_clip_val=max_norm,
        enable_progress_bar=False,
        callbacks=[recorder, Plugin()],
    )
    (plugin,) = plugins
    assert isinstance(plugin, MixedPrecision)
    assert plugin.precision == "bf16-mixed"
    assert plugin.scaler is None
    assert all(opt.defaults["fused"] for opt in recorder.optimizers)
    assert len(recorder.after) == len(recorder.before) == 8  # 240 cells / 32: every step was taken
    assert max(recorder.before) > max_norm  # clipping had something to do
    assert max(recorder.after) <= max_norm * (1 + 1e-3)  # and was applied before each step
    assert np.isfinite(model.history_["train_loss"].to_numpy()).all()
    after = model.module.state_dict()
    assert not torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])


def test_resuming_into_a_checkpoint_of_another_model_is_refused(atlas, tmp_path):
    new_model(atlas).train(checkpoint_dir=tmp_path, **{**RUN, "max_epochs": 1})
    other = new_model(atlas, organ_key="organ", region_key="region", cell_type_key="cell_type")  # other vocabulary
    with pytest.raises(ValueError, match="belongs to a different model"):
        other.train(checkpoint_dir=tmp_path, **RUN)
    other.train(checkpoint_dir=tmp_path, resume=False, **{**RUN, "max_epochs": 1})  # the documented way out
    assert other.is_trained_


def test_ddp_over_two_cpu_processes_with_shards(atlas, tmp_path):
    from scmulan.sentence import CellSource, TrainingSentenceDataset

    shards = []
    for i in range(3):
        path = tmp_path / f"shard{i}.h5ad"
        atlas[i * 100 : (i + 1) * 100].copy().write_h5ad(path)
        shards.append(str(path))
    model = new_model(atlas[:40])
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.train(
        checkpoint_dir=tmp_path / "ckpt",
        max_epochs=2,
        batch_size=16,
        corpus=shards,
        train_size=1.0,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        enable_progress_bar=False,
    )
    after = model.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)  # the spawned processes' weights came back
    # each rank streams its own share of the 340 cells; every epoch has the same number of batches per rank
    spec = model.layout.task_spec(model.obs_keys_, (1.0, 1.0, 1.0))
    sources = [CellSource(model.adata, model.vocab, obs_keys=model.obs_keys_)]
    sources += [CellSource(p, model.vocab, obs_keys=model.obs_keys_) for p in shards]
    per_rank = len(
        TrainingSentenceDataset(
            sources, spec, {}, end_id=0, pad_id=1, batch_size=16, block_size=256, rank=0, world_size=2
        )
    )
    (final,) = [p for p in os.listdir(tmp_path / "ckpt" / "checkpoints") if p.startswith("epoch1-")]
    assert final == f"epoch1-step{2 * per_rank}.ckpt"  # optimiser steps of two epochs
    assert np.isfinite(model.history_["train_loss"].to_numpy()).all()


def test_a_task_without_usable_labels_and_an_empty_shard_are_refused(atlas, tmp_path):
    data = atlas.copy()
    # every cell lacks one of the two labels annotation needs
    data.obs["cell_type"] = pd.Series(np.nan, index=data.obs_names, dtype=object)
    data.obs["coarse_cell_type"] = "T cell"
    data.obs.loc[data.obs_names[0], "cell_type"] = "CD4 T cell"
    data.obs.loc[data.obs_names[0], "coarse_cell_type"] = np.nan
    scmulan.SCMULAN.setup_anndata(data, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN(data, config="tiny")
    with pytest.raises(ValueError, match="cell-type labels"):
        model.train(max_epochs=1, tasks=("annotation",), train_size=0.5, validation_size=0.0, enable_progress_bar=False)
    empty = tmp_path / "empty.h5ad"
    atlas[:0].copy().write_h5ad(empty)
    with pytest.raises(ValueError, match="no cells"):
        model.train(max_epochs=1, tasks=("generation",), corpus=[str(empty)], enable_progress_bar=False)


def test_cells_longer_than_max_length_are_counted_in_a_warning(atlas):
    data = atlas.copy()
    scmulan.SCMULAN.setup_anndata(data, cell_type_key="cell_type")
    model = scmulan.SCMULAN(data, config="tiny", max_length=40)
    n_expressed = np.diff(data.X.indptr)  # every gene of the atlas is a model gene
    n_long = int((n_expressed > 36).sum())
    with pytest.warns(UserWarning, match=r"of 240 training cells express more than 36 model genes") as rec:
        model.train(max_epochs=2, tasks=("generation",), train_size=0.8, enable_progress_bar=False)
    assert n_long > 0
    # counted once, before training: neither the training passes nor the validation cells warn again
    assert sum("express more than" in str(w.message) for w in rec) == 1


def test_cells_longer_than_max_length_in_corpus_shards_are_counted(atlas, tmp_path):
    data = atlas.copy()
    shard = tmp_path / "shard.h5ad"
    data.write_h5ad(shard)
    scmulan.SCMULAN.setup_anndata(data, cell_type_key="cell_type")
    model = scmulan.SCMULAN(data, config="tiny", max_length=40)
    n_long = int((np.diff(data.X.indptr) > 36).sum())
    expected = rf"{2 * n_long} of 600 training cells read in this pass express more than 36 model genes"
    with pytest.warns(UserWarning, match=expected) as rec:
        model.train(max_epochs=1, tasks=("generation",), train_size=1.0, corpus=[str(shard)], enable_progress_bar=False)
    assert sum("express more than" in str(w.message) for w in rec) == 1


def test_cells_that_express_nothing_at_the_end_of_a_chunk_train(atlas):
    data = atlas.copy()
    X = data.X.tolil()
    for row in (0, data.n_obs - 2, data.n_obs - 1):  # first and last two cells express nothing
        X[row, :] = 0
    data.X = X.tocsr()
    data.X.eliminate_zeros()
    scmulan.SCMULAN.setup_anndata(data, **FIELDS)
    model = scmulan.SCMULAN(data, config="tiny", max_length=40)
    n_expressed = np.diff(data.X.indptr)  # every gene of the atlas is a model gene
    assert n_expressed[-1] == 0
    n_long = int((n_expressed > 34).sum())  # max_length less the 3 metadata fields and 3 other tokens
    assert n_long > 0
    with pytest.warns(UserWarning, match=rf"{n_long} of 300 training cells express more than 34 model genes"):
        model.train(max_epochs=1, train_size=1.0, data_kwargs={"chunk_size": 64}, enable_progress_bar=False)
    assert np.isfinite(model.history_["train_loss"].to_numpy()).all()
    counted = _expressed_per_row(data.X, np.arange(data.n_vars))
    np.testing.assert_array_equal(counted, n_expressed)


def test_finetuning_the_original_checkpoint_on_data_missing_most_genes(legacy_dir):
    model = scmulan.SCMULAN.from_legacy_checkpoint(legacy_dir / "tiny_ckpt.pt", legacy_dir / "meta_info.pt")
    old = {k: v.clone() for k, v in model.module.state_dict().items()}
    pbmc = scmulan.datasets.pbmc68k()[:200].copy()
    with pytest.warns(UserWarning, match="202 of the model.s 2000 genes"):
        scmulan.pp.prepare(pbmc, model)  # 202 of the 2000 model genes are in these data (9 by a previous symbol)
    assert pbmc.uns["scmulan_prepare"]["n_overlap"] == 202  # most of the 2000 are missing
    scmulan.SCMULAN.setup_anndata(pbmc, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model.finetune(pbmc, max_epochs=1, batch_size=32, enable_progress_bar=False)
    new_types = set(pbmc.obs["cell_type"].astype(str)) - set(model.vocab.categories("cell_type")[:109])
    assert len(model.vocab) > 2222  # the PBMC labels joined the vocabulary after the original 2,222 entities
    assert new_types <= set(model.vocab.categories("cell_type"))
    embedding = model.module.state_dict()["entity_embedding.weight"]
    assert embedding.shape[0] == len(model.vocab)
    assert not torch.equal(embedding[:2222], old["entity_embedding.weight"])  # trained, old ids kept in place
    labels = model.annotate(pbmc, progress=False)
    assert set(labels["fine"].dropna().astype(str)) <= set(model.vocab.categories("cell_type"))
