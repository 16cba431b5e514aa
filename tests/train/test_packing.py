"""Packed training: same loss and gradients as the padded path, FlexAttention's mask, fit(packing=True), and a
packed stream sharded over two ranks that resumes exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scmulan
from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.sentence import CellSource, TrainingSentenceDataset, forward_heads, pack_batch, real_token_fraction
from scmulan.train import CSentenceTrainingPlan, fit, set_objective

FIELDS = ["organ", "region", "coarse_cell_type", "cell_type"]


@pytest.fixture(scope="module")
def setup(atlas):
    data = atlas[:240].copy()
    scmulan.SCMULAN.setup_anndata(data, **{f"{f}_key": f for f in FIELDS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = scmulan.SCMULAN(data, config="tiny")
    spec = model.layout.task_spec(model.obs_keys_, (1.0, 1.0, 1.0))
    task_ids = {t: model.vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}
    source = CellSource(data, model.vocab, obs_keys=model.obs_keys_)
    return model, spec, task_ids, source


def _dataset(setup, **kwargs):
    model, spec, task_ids, source = setup
    kwargs = {"batch_size": 16, "chunk_size": 64, "warn_truncation": False, **kwargs}
    return TrainingSentenceDataset(
        [source], spec, task_ids, end_id=model.vocab.end_id, pad_id=model.vocab.pad_id, **kwargs
    )


def _net(model, dropout=0.0):
    torch.manual_seed(0)
    config = TransformerConfig.from_preset("tiny", vocab_size=len(model.vocab), dropout=dropout, gene_bag=True)
    return CSentenceTransformer(config).train()


@pytest.mark.parametrize("row_tokens", [None, 40])
def test_packed_loss_and_gradients_equal_the_padded_path(setup, row_tokens):
    net = _net(setup[0])
    batches = list(_dataset(setup))[:3]
    for batch in batches:
        packed = pack_batch(batch, row_tokens=row_tokens)
        if row_tokens is None:  # 40 tokens: about one sentence per row
            assert packed["packed_ids"].shape[0] < batch["ids"].shape[0]  # fewer rows than sentences
        outs, grads = [], []
        for b in (batch, packed):
            net.zero_grad()
            logits, values = forward_heads(net, b)
            out = set_objective(logits, values, b["ids"], b["levels"], b["groups"])
            out.loss.backward()
            outs.append(out)
            grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None]))
        padded, pk = outs
        # fp32: only the summation order inside attention differs
        torch.testing.assert_close(pk.loss, padded.loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            pk.per_sentence_entity, padded.per_sentence_entity, rtol=1e-5, atol=1e-6, equal_nan=True
        )
        torch.testing.assert_close(
            pk.per_sentence_value, padded.per_sentence_value, rtol=1e-5, atol=1e-6, equal_nan=True
        )
        torch.testing.assert_close(pk.hits, padded.hits, equal_nan=True)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_flex_block_mask_gives_the_dense_masks_hidden_states(setup):
    # FlexAttention (the CUDA path) runs on CPU without gradients: its block mask must match the dense mask.
    net = _net(setup[0]).eval()
    packed = pack_batch(next(iter(_dataset(setup))), row_tokens=40)
    args = packed["packed_ids"], packed["packed_levels"]
    real = packed["packed_document"] >= 0
    with torch.no_grad():
        dense = net(*args, document=packed["packed_document"])
        net._use_flex = lambda device: True
        flex = net(*args, document=packed["packed_document"])
    torch.testing.assert_close(flex[real], dense[real], rtol=1e-4, atol=1e-5)


def test_document_refuses_a_cache_or_attention_mask(setup):
    net = _net(setup[0])
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="packed ids alone"):
        net(ids, ids, torch.ones(1, 4, dtype=torch.bool), document=torch.zeros(1, 4, dtype=torch.long))


def test_packing_reaches_95_percent_real_tokens(setup):
    batches = list(_dataset(setup, batch_size=32, chunk_size=240))
    real = sum(int(b["lengths"].sum()) for b in batches)
    packed = sum(pack_batch(b)["packed_ids"].numel() for b in batches)
    assert real / packed >= 0.95
    assert all(real_token_fraction(pack_batch(b)) >= 0.9 for b in batches)


def test_fit_with_packing_trains_the_same_as_padded(setup, tmp_path):
    model = setup[0]
    histories = []
    for packing in (False, True):
        plan = CSentenceTrainingPlan(_net(model), warmup_steps=1)
        h = fit(
            plan,
            _dataset(setup),
            max_epochs=1,
            limit_train_batches=3,
            log_every_n_steps=1,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            checkpoint_dir=tmp_path / str(packing),
            packing=packing,
        )
        histories.append(h["train_loss_step"]["train_loss_step"].to_numpy())
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-4)


def _fingerprints(batch):
    """One fingerprint per sentence: its sorted gene ids (level > 0), read from the packed rows."""
    ids, levels = batch["packed_ids"].reshape(-1), batch["packed_levels"].reshape(-1)
    doc = batch["packed_document"].reshape(-1)
    out = []
    for s in range(len(batch["lengths"])):
        sel = (doc == s) & (levels > 0)
        out.append(tuple(sorted(ids[sel].tolist())))
    return out


def test_two_ranks_see_disjoint_shards_of_a_packed_stream_and_resume_exactly(setup):
    ranks = [_dataset(setup, rank=r, world_size=2, chunk_size=40) for r in (0, 1)]
    streams = [[pack_batch(b) for b in ds] for ds in ranks]
    assert len(streams[0]) == len(streams[1])  # DDP needs the same number of steps on every rank
    seen = [{f for b in stream for f in _fingerprints(b)} for stream in streams]
    assert not seen[0] & seen[1]  # disjoint cells
    assert len(seen[0]) + len(seen[1]) == 240  # together: every cell once (240 = 6 chunks of 40)
    for ds, stream in zip(ranks, streams, strict=True):  # resume mid-epoch on each rank
        ds.start_batch = 3
        resumed = [pack_batch(b) for b in ds]
        assert len(resumed) == len(stream) - 3
        for a, b in zip(resumed, stream[3:], strict=True):
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fit_compile_compiles_the_blocks_in_place_and_trains_the_same(setup, tmp_path):
    model = setup[0]
    losses, plans = [], []
    for compile_ in (False, True):
        plan = CSentenceTrainingPlan(_net(model), warmup_steps=1)
        keys = set(plan.net.state_dict())
        h = fit(
            plan,
            _dataset(setup),
            max_epochs=1,
            limit_train_batches=2,
            log_every_n_steps=1,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            checkpoint_dir=tmp_path / str(compile_),
            compile=compile_,
        )
        assert set(plan.net.state_dict()) == keys  # compiled in place: the weights keep their names
        losses.append(h["train_loss_step"]["train_loss_step"].to_numpy())
        plans.append(plan)
    assert all(block._compiled_call_impl is not None for block in plans[1].net.blocks)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
