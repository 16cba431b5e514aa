"""CSentenceTransformer: left padding, batch independence, the key/value cache and packed sentences (all fp32 on
CPU), with and without the gene bag."""

from __future__ import annotations

import nn_helpers as H  # tests/nn/_helpers.py, loaded by tests/nn/conftest.py
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.nn import CSentenceTransformer, KVCache, TransformerConfig

TOL = 1e-5
V = 40


_NETS = {"plain": H.build_net(V), "gene_bag": H.build_net(V, gene_bag=True)}


@pytest.fixture(scope="module", params=list(_NETS))
def net(request):
    return _NETS[request.param]


def _alone(net, ids, levels):
    """Hidden states, entity logits and values of one cell run alone (batch of 1, no padding, no mask)."""
    with torch.inference_mode():
        hidden = net(ids[None], levels[None])[0]
        logits, values = net.heads(hidden)
    return hidden, logits, values


def _maxdiff(a, b) -> float:
    return float((a - b).abs().max())


def _close(a, b) -> bool:
    """Equal up to fp32 rounding, relative to the size of the entries (logits of these random networks reach ~10)."""
    return _maxdiff(a, b) < TOL * max(1.0, float(b.abs().max()))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), extra=st.integers(0, 3), pad_id=st.integers(0, V - 1))
@pytest.mark.parametrize("name", list(_NETS))
def test_left_padded_cells_equal_cells_alone(name, seed, n, extra, pad_id):
    net = _NETS[name]
    cells = H.random_cells(n, V, min_len=1, max_len=15, seed=seed)
    ids, levels, mask = H.left_pad(cells, pad_id=pad_id, extra=extra)
    with torch.inference_mode():
        hidden = net(ids, levels, mask)
        logits, values = net.heads(hidden)
    assert torch.isfinite(hidden).all()  # padded rows attend to themselves: no NaN anywhere
    T = ids.shape[1]
    for b, (i, lv) in enumerate(cells):
        h1, l1, v1 = _alone(net, i, lv)
        real = slice(T - len(i), T)
        assert _close(hidden[b, real], h1)
        assert _close(logits[b, real], l1)
        assert _close(values[b, real], v1)


def test_padding_would_leak_without_the_attention_mask(net):
    # The oracle above is sensitive: the same batch without its mask differs from the cells alone by far more
    # than the tolerance (so the equality above is not vacuous).
    cells = H.random_cells(3, V, min_len=3, max_len=10, seed=1)
    ids, levels, mask = H.left_pad(cells, extra=2)
    with torch.inference_mode():
        unmasked = net(ids, levels)
    i, lv = cells[0]
    h1, _, _ = _alone(net, i, lv)
    assert _maxdiff(unmasked[0, -len(i) :], h1) > 1e-2


def test_outputs_do_not_depend_on_the_other_cells_of_the_batch(net):
    cells = H.random_cells(8, V, min_len=2, max_len=20, seed=3)
    target = cells[0]
    runs = []
    for companions in ([], cells[1:3], cells[3:8], [cells[5], cells[5], cells[5]]):
        row = len(companions) if len(companions) % 2 else 0  # the target first or last
        batch = [*companions, target] if row else [target, *companions]
        ids, levels, mask = H.left_pad(batch)
        with torch.inference_mode():
            hidden = net(ids, levels, mask)
            logits, values = net.heads(hidden[row, -1])
        runs.append((hidden[row, -len(target[0]) :], logits, values))
    for hidden, logits, values in runs[1:]:
        assert _maxdiff(hidden, runs[0][0]) < TOL
        assert _maxdiff(logits, runs[0][1]) < TOL
        assert _maxdiff(values, runs[0][2]) < TOL


def test_padding_ids_outside_the_vocabulary_are_ignored(net):
    cells = H.random_cells(2, V, seed=4)
    ids, levels, mask = H.left_pad(cells, pad_id=10 * V, pad_level=99, extra=1)
    with torch.inference_mode():
        hidden = net(ids, levels, mask)
    i, lv = cells[1]
    assert _maxdiff(hidden[1, -len(i) :], _alone(net, i, lv)[0]) < TOL


# ---------------------------------------------------------------------------- key/value cache


def _full_forward(net, ids, levels, mask=None):
    with torch.inference_mode():
        return net(ids, levels, mask)


@pytest.mark.parametrize("capacity", [1, 2, 5, 64])
def test_cached_steps_equal_a_full_forward(net, capacity):
    g = torch.Generator().manual_seed(capacity)
    T = 23
    ids = torch.randint(0, V, (2, T), generator=g)
    levels = torch.randint(0, 11, (2, T), generator=g)
    full = _full_forward(net, ids, levels)
    cache = KVCache(net.config.n_layer, capacity=capacity)
    pieces = []
    # a prompt of 4 positions (larger than the smallest capacities), then chunks of 1, 2 and 3 positions
    bounds = [0, 4, 5, 6, 8, 11, 12, 15, 16, 17, 18, 19, 20, 21, 22, 23]
    with torch.inference_mode():
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            pieces.append(net(ids[:, start:stop], levels[:, start:stop], None, cache))
    stepped = torch.cat(pieces, dim=1)
    assert cache.length == T
    assert cache.capacity >= T
    if capacity < T:
        assert cache.capacity > capacity  # the cache grew past its initial capacity
    assert _maxdiff(stepped, full) < TOL


def test_cached_steps_after_a_left_padded_prompt(net):
    cells = H.random_cells(4, V, min_len=2, max_len=12, seed=7)
    continuation = torch.randint(1, V, (4, 9), generator=torch.Generator().manual_seed(8))
    cont_levels = torch.randint(0, 11, (4, 9), generator=torch.Generator().manual_seed(9))
    ids, levels, mask = H.left_pad(cells, extra=1)
    cache = KVCache(net.config.n_layer, capacity=3)
    with torch.inference_mode():
        first = net(ids, levels, mask, cache)
        steps = [net(continuation[:, t : t + 1], cont_levels[:, t : t + 1], None, cache) for t in range(9)]
    stepped = torch.cat([first, *steps], dim=1)
    for b, (i, lv) in enumerate(cells):
        whole_ids = torch.cat([i, continuation[b]])
        whole_levels = torch.cat([lv, cont_levels[b]])
        h1, _, _ = _alone(net, whole_ids, whole_levels)
        assert _maxdiff(stepped[b, -len(whole_ids) :], h1) < TOL


def test_cache_select_keeps_rows_in_the_given_order(net):
    cells = H.random_cells(5, V, min_len=3, max_len=10, seed=11)
    ids, levels, mask = H.left_pad(cells)
    cache = KVCache(net.config.n_layer, capacity=2)
    g = torch.Generator().manual_seed(12)
    with torch.inference_mode():
        net(ids, levels, mask, cache)
        step1 = torch.randint(1, V, (5, 1), generator=g)
        net(step1, torch.full_like(step1, 4), None, cache)
        keep = torch.tensor([4, 1, 2])
        cache.select(keep)
        step2 = torch.randint(1, V, (3, 1), generator=g)
        # several more steps, enough to make the selected cache grow again
        more = torch.randint(1, V, (3, 12), generator=g)
        out = [net(step2, torch.full_like(step2, 9), None, cache)]
        out += [net(more[:, t : t + 1], torch.full_like(more[:, t : t + 1], 2), None, cache) for t in range(12)]
    assert cache.keys[0].shape[0] == 3
    assert cache.key_mask.shape[0] == 3
    last = torch.cat(out, dim=1)  # (3, 13, C)
    for r, b in enumerate(keep.tolist()):
        i, lv = cells[b]
        whole_ids = torch.cat([i, step1[b], step2[r], more[r]])
        whole_levels = torch.cat([lv, torch.tensor([4, 9]), torch.full((12,), 2)])
        h1, _, _ = _alone(net, whole_ids, whole_levels)
        assert _maxdiff(last[r], h1[-13:]) < TOL


def test_cache_bookkeeping():
    cache = KVCache(n_layer=1, capacity=2)
    k = torch.randn(2, 1, 3, 4)
    cache.reserve(3)
    assert cache.capacity >= 3
    keys, values = cache.update(0, k, k + 1)
    assert torch.equal(keys, k)
    assert torch.equal(values, k + 1)
    cache.advance(torch.tensor([[False, True, True], [True, True, True]]))
    assert cache.length == 3
    assert cache.past_mask(2, torch.device("cpu")).tolist() == [[False, True, True], [True, True, True]]
    cache.select(torch.tensor([1]))
    assert cache.past_mask(1, torch.device("cpu")).tolist() == [[True, True, True]]
    assert torch.equal(cache.keys[0][:, :, :3], k[1:])


# ---------------------------------------------------------------------------- packed sentences and the gene bag


def test_packed_sentences_equal_sentences_alone(net):
    cells = H.random_cells(3, V, min_len=2, max_len=9, seed=21)
    ids = torch.cat([i for i, _ in cells])[None]
    levels = torch.cat([lv for _, lv in cells])[None]
    document = torch.cat([torch.full((len(i),), k) for k, (i, _) in enumerate(cells)])[None]
    with torch.inference_mode():
        packed = net(ids, levels, document=document)[0]
    alone = torch.cat([_alone(net, i, lv)[0] for i, lv in cells])
    assert _maxdiff(packed, alone) < TOL


def test_a_zero_gene_bag_leaves_the_network_unchanged():
    plain, bagged = _NETS["plain"], H.build_net(V, gene_bag=True)
    assert bagged.load_state_dict(plain.state_dict(), strict=False).missing_keys == ["gene_bag.weight"]
    cells = H.random_cells(3, V, seed=5)
    ids, levels, mask = H.left_pad(cells)
    with torch.inference_mode():
        torch.nn.init.zeros_(bagged.gene_bag.weight)
        assert _maxdiff(bagged(ids, levels, mask), plain(ids, levels, mask)) == 0.0
        bagged.gene_bag.weight.normal_()
        assert _maxdiff(bagged(ids, levels, mask), plain(ids, levels, mask)) > 1e-2


def test_the_gene_bag_adds_the_scaled_level_weighted_sum_of_the_genes_so_far():
    net = _NETS["gene_bag"]
    ids = torch.tensor([5, 7, 9, 5, 11, 13])
    levels = torch.tensor([0, 3, 0, 10, 1, 2])  # level 0: a prompt or metadata token, not a gene
    with torch.inference_mode():
        hidden = net(ids[None], levels[None])[0]
        saved = net.gene_bag
        net.gene_bag = None
        try:
            without = net(ids[None], levels[None])[0]
        finally:
            net.gene_bag = saved
        W = net.gene_bag.weight.detach()
    for t in range(len(ids)):
        genes = (levels[: t + 1] > 0).nonzero().ravel()
        expected = (levels[genes, None] * W[ids[genes]]).sum(0) / max(len(genes), 1) ** 0.5
        assert _maxdiff(hidden[t] - without[t], expected) < TOL


def test_the_gene_bag_is_off_for_the_original_and_for_models_saved_without_it():
    assert not TransformerConfig.from_preset("scmulan-v1").gene_bag
    # off in every preset too (it cost 0.07-0.16 atlas macro-F1 with `small`; benchmarks/README.md "Gene bag"), on when asked
    assert not any(TransformerConfig.from_preset(name, vocab_size=10).gene_bag for name in ("tiny", "small", "base"))
    assert TransformerConfig.from_preset("small", vocab_size=10, gene_bag=True).gene_bag
    assert not TransformerConfig.from_dict({"vocab_size": 10}).gene_bag
    for gene_bag in (False, True):
        config = TransformerConfig(vocab_size=30, n_embd=16, n_head=2, n_layer=1, gene_bag=gene_bag)
        assert CSentenceTransformer(config).num_parameters() == config.n_params()
