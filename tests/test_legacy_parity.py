"""Parity with the ORIGINAL scMulan code: reference vectors recorded from it on a tiny random checkpoint
(``shared/reference/legacy_parity``, see its README). Skipped when that folder is absent."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import scmulan
from scmulan.hub import load_legacy_checkpoint
from scmulan.nn import CSentenceTransformer, greedy_decode, sample_decode

TOL = 1e-4
PCT = 2206  # the original's annotation task token
END = 0


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # many small forward passes: torch's intra-op threads only spin against each other on a small shared CPU
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def expected(legacy_dir):
    with np.load(legacy_dir / "expected.npz", allow_pickle=False) as f:
        return dict(f)


@pytest.fixture(scope="module")
def expected_ct_only(legacy_dir):
    with np.load(legacy_dir / "expected_ct_only.npz", allow_pickle=False) as f:
        return dict(f)


@pytest.fixture(scope="module")
def net(legacy_dir):
    config, state = load_legacy_checkpoint(legacy_dir / "tiny_ckpt.pt")
    net = CSentenceTransformer(config)
    net.load_state_dict(state)
    return net.eval()


@pytest.fixture(scope="module")
def model(legacy_dir):
    return scmulan.SCMULAN.from_legacy_checkpoint(legacy_dir / "tiny_ckpt.pt", legacy_dir / "meta_info.pt")


def _ragged(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _prompt_batch(expected):
    """The 48 original prompts, left-padded into one batch."""
    ids = _ragged(expected["prompt_token_ids"], expected["prompt_offsets"])
    levels = _ragged(expected["prompt_levels"], expected["prompt_offsets"])
    T = max(len(i) for i in ids)
    B = len(ids)
    out_ids = torch.zeros(B, T, dtype=torch.long)
    out_levels = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, (i, lv) in enumerate(zip(ids, levels, strict=True)):
        out_ids[b, T - len(i) :] = torch.from_numpy(i)
        out_levels[b, T - len(i) :] = torch.from_numpy(lv)
        mask[b, T - len(i) :] = True
    return out_ids, out_levels, mask


def _maxabs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ---------------------------------------------------------------------------- checkpoint and vocabulary


def test_checkpoint_config_is_read_from_model_args(legacy_dir, net, model):
    args = torch.load(legacy_dir / "tiny_ckpt.pt", map_location="cpu", weights_only=True)["model_args"]
    for config in (net.config, model.module.config):
        assert (config.n_layer, config.n_head, config.n_embd) == (args["n_layer"], args["n_head"], args["n_embd"])
        assert (config.n_layer, config.n_head, config.n_embd) == (2, 4, 64)
        assert config.vocab_size == args["vocab_size"] == 2222
        assert config.bias is False
        assert config.head_bias is False  # the original has no biases at all
        assert config.n_levels == 11
    assert len(model.vocab) == 2222
    assert model.vocab.end_id == END


# ---------------------------------------------------------------------------- network level


def test_head_outputs_at_the_last_prompt_position(expected, net):
    ids, levels, mask = _prompt_batch(expected)
    assert (ids[:, -1] == PCT).all()
    with torch.inference_mode():
        logits, values = net.heads(net(ids, levels, mask)[:, -1])
    d_cls = _maxabs(logits, expected["last_prompt_logits_cls"])
    d_exp = _maxabs(values, expected["last_prompt_logits_exp"])
    assert d_cls <= TOL, f"entity logits differ from the original by up to {d_cls:.3g}"
    assert d_exp <= TOL, f"value head differs from the original by up to {d_exp:.3g}"


def test_every_decoding_step_and_the_greedy_tokens(expected, net):
    ids, levels, mask = _prompt_batch(expected)
    out = greedy_decode(net, ids, levels, mask, 3, ban_prompt="all_but_last", stop_at_end=True, return_logits=True)
    step_cls = _ragged(expected["step_logits_cls"], expected["step_offsets"])
    step_exp = _ragged(expected["step_logits_exp"], expected["step_offsets"])
    gen_ids = _ragged(expected["gen_token_ids"], expected["gen_offsets"])
    gen_levels = _ragged(expected["gen_levels"], expected["gen_offsets"])
    worst_cls = worst_exp = 0.0
    for b in range(ids.shape[0]):
        n = len(gen_ids[b])
        assert int(out.n_generated[b]) == n
        assert out.tokens[b, :n].tolist() == gen_ids[b].tolist(), f"cell {b}"
        assert out.levels[b, :n].tolist() == gen_levels[b].tolist(), f"cell {b}"
        steps = len(step_cls[b])
        worst_cls = max(worst_cls, _maxabs(out.entity_logits[b, :steps], step_cls[b]))
        worst_exp = max(worst_exp, _maxabs(out.values[b, :steps], step_exp[b]))
    assert worst_cls <= TOL, f"step entity logits differ from the original by up to {worst_cls:.3g}"
    assert worst_exp <= TOL, f"step values differ from the original by up to {worst_exp:.3g}"
    # the embedding the original stores: hidden state at the first generated token, from the same decoding
    emb = out.hidden[torch.arange(ids.shape[0]), out.n_generated - 1]
    d = _maxabs(emb, expected["X_scMulan"])
    assert d <= TOL, f"X_scMulan differs by up to {d:.3g}"


# ---------------------------------------------------------------------------- public API


def test_annotate_legacy_reproduces_the_original(legacy_dir, expected, model):
    adata = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")
    obs = pd.read_csv(legacy_dir / "expected_obs.csv", index_col=0)
    assert adata.obs_names.tolist() == obs.index.tolist() == expected["obs_names"].tolist()
    scmulan.tl.annotate(adata, model, legacy=True, progress=False)
    assert adata.obs["scmulan_fine"].astype(str).tolist() == obs["cell_type_from_scMulan"].tolist()
    d = _maxabs(adata.obsm["X_scmulan"], expected["X_scMulan"])
    assert adata.obsm["X_scmulan"].shape == expected["X_scMulan"].shape
    assert d <= TOL, f"obsm['X_scmulan'] differs from the original X_scMulan by up to {d:.3g}"


def test_restricted_to_cell_types_reproduces_ignore_idx_run(legacy_dir, expected_ct_only, model, monkeypatch):
    # Record the banned set the public API really hands to the decoder.
    from scmulan.model import _annotation

    seen = []
    original = _annotation.decode_cells

    def spy(net, vocab, source, recipe, **kwargs):
        seen.append(recipe.banned)
        return original(net, vocab, source, recipe, **kwargs)

    monkeypatch.setattr(_annotation, "decode_cells", spy)
    adata = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")
    labels, emb = model.annotate(adata, legacy=True, restrict_to_cell_types=True, return_embedding=True, progress=False)
    assert len(seen) == 1
    assert seen[0] is not None
    assert np.flatnonzero(seen[0]).tolist() == sorted(expected_ct_only["ignore_idx"].tolist())
    assert labels.index.tolist() == expected_ct_only["obs_names"].tolist()
    assert labels["fine"].astype(str).tolist() == expected_ct_only["cell_type"].tolist()
    assert len(set(expected_ct_only["cell_type"])) > 1  # the label path is really exercised here
    coarse = [model.vocab.token(int(t))[1] for t in expected_ct_only["pred_token_ids"][:, 0]]
    assert labels["coarse"].astype(str).tolist() == coarse
    d = _maxabs(emb, expected_ct_only["X_scMulan"])
    assert d <= TOL, f"embedding differs from the original's by up to {d:.3g}"


def test_from_raw_counts_after_prepare(legacy_dir, expected, model):
    # The original normalised the 765-gene counts (normalize_total 1e4 + log1p) BEFORE subsetting to its 2000 genes;
    # prepare must do the same, so the result equals the recorded prepared matrix.
    adata = ad.read_h5ad(legacy_dir / "input_counts.h5ad")
    assert adata.n_vars == 765
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*of the model's 2000 genes")  # 193 of 2000: expected here
        scmulan.pp.prepare(adata, model, gene_table=None)  # the original matched names as they are
    prepared = ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")
    shared = [g for g in adata.var_names if g in set(prepared.var_names)]
    assert len(shared) == 193
    ours = adata[:, shared].X
    ours = ours.toarray() if hasattr(ours, "toarray") else np.asarray(ours)
    d = _maxabs(ours, prepared[:, shared].X.toarray())
    assert d <= 1e-5, f"normalised values differ by up to {d:.3g}"
    # the query really lacks most model genes: annotation says so, knowing prepare matched what exists
    with pytest.warns(
        UserWarning, match=r"only 193 of the model's 2000 genes \(9.7%.*matched with `scmulan.pp.prepare"
    ):
        scmulan.tl.annotate(adata, model, legacy=True, progress=False)
    obs = pd.read_csv(legacy_dir / "expected_obs.csv", index_col=0)
    assert adata.obs["scmulan_fine"].astype(str).tolist() == obs["cell_type_from_scMulan"].tolist()
    d = _maxabs(adata.obsm["X_scmulan"], expected["X_scMulan"])
    assert d <= TOL, f"obsm['X_scmulan'] from raw counts differs by up to {d:.3g}"


def test_sampling_reproduces_the_original_generation(legacy_dir, model):
    # Comparable: the same RNG stream (one torch.Generator seeded 0, shared by 4 sequential calls, as the original's
    # global `torch.manual_seed(0)` once), the same call order, batch size 1 (one multinomial draw per token), CPU
    # fp32. Not comparable: a batched call (one draw call per step for all rows splits the stream differently), GPU
    # (a different generator), or anything that changes the number of draws (another max length, a top-k).
    record = json.loads((legacy_dir / "generation.json").read_text())
    assert record["prompt_token_ids"] == [2004, 2207]
    samples = record["samples_scMulanModel"]
    g = torch.Generator().manual_seed(record["seed"])
    n_new = record["max_new_tokens"] - len(record["prompt_token_ids"])  # the original's limit is the total length
    assert n_new == 48
    ids = torch.tensor([record["prompt_token_ids"]])
    levels = torch.tensor([record["prompt_levels"]])
    for sample in samples:
        out = sample_decode(
            model.module,
            ids,
            levels,
            None,
            n_new,
            gamma=record["gamma"],
            generator=g,
            ban_seen="all_but_last",
            level_range=(0, 10),
        )
        n = int(out.lengths[0])
        assert record["prompt_token_ids"] + out.tokens[0, :n].tolist() == sample["token_ids"]
        assert record["prompt_levels"] + out.levels[0, :n].tolist() == sample["levels"]
        assert bool(out.ended[0]) == sample["ended_with_E"]
