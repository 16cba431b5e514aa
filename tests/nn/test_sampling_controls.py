"""Sampling controls of :func:`scmulan.nn.sample_decode` added for issue 22: ``top_p`` (nucleus), ``n_genes`` (set
lengths), ``guidance`` with ``unconditional`` prompts (classifier-free guidance) and ``level_temperature``."""

from __future__ import annotations

import nn_helpers as H  # tests/nn/_helpers.py, loaded by tests/nn/conftest.py
import pytest
import torch

from scmulan.nn import CSentenceTransformer, TransformerConfig, sample_decode
from scmulan.nn.sampling import _nucleus

V = 40
END = 0
NET = H.build_net(V, std=0.15)  # smoother logits than the default: a nucleus of several entities


def _first_step_probs(net, ids, levels, temperature=1.0):
    """The first step's distribution for ONE prompt by a plain full forward (prompt entities banned)."""
    with torch.inference_mode():
        logits = net.heads(net(ids[None], levels[None])[0, -1])[0].float()
    logits = logits.clone()
    logits[ids] = float("-inf")
    return torch.softmax(logits / temperature, -1)


def _repeat(ids, levels, n):
    return ids[None].repeat(n, 1), levels[None].repeat(n, 1)


# ---------------------------------------------------------------------------- top_p


def test_nucleus_keeps_the_smallest_most_likely_set_reaching_top_p():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 30, generator=g) * 2, -1)
    for top_p in (0.1, 0.5, 0.9, 0.99, 1.0):
        kept = _nucleus(probs, top_p) > 0
        for row, keep in zip(probs, kept, strict=True):
            order = torch.argsort(row, descending=True)
            k = int((torch.cumsum(row[order], 0) < top_p).sum()) + 1  # first prefix whose mass reaches top_p
            expected = torch.zeros_like(keep)
            expected[order[: min(k, len(row))]] = True
            assert torch.equal(keep, expected)
    # rows with nothing to draw (all zero, or NaN after a softmax over nothing) are left as they are
    odd = torch.tensor([[0.0, 0.0, 0.0], [float("nan")] * 3])
    out = _nucleus(odd, 0.5)
    assert torch.equal(out[0], odd[0])
    assert torch.isnan(out[1]).all()


def test_top_p_never_samples_outside_the_nucleus_and_keeps_its_proportions():
    ids, levels = H.random_cells(1, V, min_len=3, max_len=3, seed=4, distinct=True)[0]
    probs = _first_step_probs(NET, ids, levels)
    order = torch.argsort(probs, descending=True)
    top_p = 0.6
    k = int((torch.cumsum(probs[order], 0) < top_p).sum()) + 1
    nucleus = order[:k]
    assert 2 <= k < V - 3  # the test needs a nucleus that is neither one entity nor everything
    n = 4000
    b_ids, b_levels = _repeat(ids, levels, n)
    out = sample_decode(NET, b_ids, b_levels, None, 1, top_p=top_p, generator=torch.Generator().manual_seed(1))
    drawn = out.tokens[:, 0]
    assert torch.isin(drawn, nucleus).all(), "drew an entity outside the nucleus"
    # inside the nucleus, the frequencies follow the renormalised probabilities (5 binomial s.d.)
    p = probs[nucleus] / probs[nucleus].sum()
    freq = torch.stack([(drawn == e).float().mean() for e in nucleus])
    assert ((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-3).all()


def test_top_p_one_is_no_filter_and_bad_values_are_refused():
    cells = H.random_cells(6, V, min_len=2, max_len=8, seed=5)
    ids, levels, mask = H.left_pad(cells)
    runs = [
        sample_decode(NET, ids, levels, mask, 15, top_p=p, generator=torch.Generator().manual_seed(3))
        for p in (None, 1.0)
    ]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"top_p.*\(0, 1\]"):
            sample_decode(NET, ids, levels, mask, 5, top_p=bad)


# ---------------------------------------------------------------------------- n_genes


def test_n_genes_sets_each_cells_length_and_negative_leaves_the_stop_to_the_model():
    cells = H.random_cells(5, V, min_len=2, max_len=4, seed=6, distinct=True)
    ids, levels, mask = H.left_pad(cells)
    n_genes = torch.tensor([0, 3, 7, 12, -1])
    out = sample_decode(NET, ids, levels, mask, 30, n_genes=n_genes, generator=torch.Generator().manual_seed(2))
    for b in range(4):
        row = out.tokens[b, : out.lengths[b]].tolist()
        assert len(row) == int(n_genes[b]) + 1
        assert row[-1] == END
        assert END not in row[:-1]
        assert out.ended[b]
    free = sample_decode(NET, ids, levels, mask, 30, generator=torch.Generator().manual_seed(2))
    unset = sample_decode(
        NET, ids, levels, mask, 30, n_genes=torch.full((5,), -1), generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(free.tokens, unset.tokens)  # -1 everywhere: exactly the model's own stops
    assert torch.equal(free.lengths, unset.lengths)
    with pytest.raises(ValueError, match="one count per prompt"):
        sample_decode(NET, ids, levels, mask, 5, n_genes=torch.tensor([1, 2]))


# ---------------------------------------------------------------------------- guidance


def test_guidance_of_one_or_against_the_same_prompt_changes_nothing():
    cells = H.random_cells(6, V, min_len=2, max_len=8, seed=7)
    ids, levels, mask = H.left_pad(cells)
    plain = sample_decode(NET, ids, levels, mask, 15, generator=torch.Generator().manual_seed(4))
    for w, uncond in ((1.0, (ids[:, -1:], levels[:, -1:], None)), (3.0, (ids, levels, mask))):
        guided = sample_decode(
            NET, ids, levels, mask, 15, guidance=w, unconditional=uncond, generator=torch.Generator().manual_seed(4)
        )
        assert torch.equal(plain.tokens, guided.tokens)
        assert torch.equal(plain.lengths, guided.lengths)


def test_guidance_samples_from_the_guided_logits():
    ids, levels = H.random_cells(1, V, min_len=4, max_len=4, seed=8, distinct=True)[0]
    u_ids, u_levels = ids[-1:], levels[-1:]  # the prompt without its first entities (the "condition")
    w = 2.5
    with torch.inference_mode():
        c = NET.heads(NET(ids[None], levels[None])[0, -1])[0].float()
        u = NET.heads(NET(u_ids[None], u_levels[None])[0, -1])[0].float()
    guided = (u + w * (c - u)).clone()
    guided[ids] = float("-inf")  # the prompt's own entities are banned (the sentence is the conditional one)
    expected = torch.softmax(guided, -1)
    n = 4000
    b_ids, b_levels = _repeat(ids, levels, n)
    out = sample_decode(
        NET,
        b_ids,
        b_levels,
        None,
        1,
        guidance=w,
        unconditional=(*_repeat(u_ids, u_levels, n), None),
        generator=torch.Generator().manual_seed(5),
    )
    freq = torch.bincount(out.tokens[:, 0], minlength=V).float() / n
    assert (freq[ids] == 0).all()
    assert ((freq - expected).abs() <= 5 * torch.sqrt(expected * (1 - expected) / n) + 2e-3).all()
    assert (expected - _first_step_probs(NET, ids, levels)).abs().max() > 0.05  # guidance did change the law


def test_guidance_without_unconditional_prompts_is_refused():
    ids, levels, mask = H.left_pad(H.random_cells(2, V, seed=9))
    with pytest.raises(ValueError, match="unconditional"):
        sample_decode(NET, ids, levels, mask, 5, guidance=2.0)
    with pytest.raises(ValueError, match="one prompt per prompt"):
        sample_decode(NET, ids, levels, mask, 5, guidance=2.0, unconditional=(ids[:1], levels[:1], mask[:1]))


# ---------------------------------------------------------------------------- level_temperature


def _next_net() -> CSentenceTransformer:
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=V, n_layer=1, n_head=2, n_embd=32, generation_objective="next")
    net = CSentenceTransformer(config)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net.eval()


def test_level_temperature_defaults_to_temperature_and_a_cold_one_takes_the_likeliest_level():
    net = _next_net()
    cells = H.random_cells(8, V, min_len=2, max_len=6, seed=10)
    ids, levels, mask = H.left_pad(cells)

    def run(**kw):
        return sample_decode(net, ids, levels, mask, 1, generator=torch.Generator().manual_seed(6), **kw)

    assert torch.equal(run(temperature=0.8).levels, run(temperature=0.8, level_temperature=0.8).levels)
    cold = run(level_temperature=1e-4)
    with torch.inference_mode():
        last = net(ids, levels, mask)[:, -1]
        likeliest = net.level_logits(last, cold.tokens[:, 0]).argmax(-1) + 1
    is_gene = cold.tokens[:, 0] != END
    assert torch.equal(cold.levels[is_gene, 0], likeliest[is_gene].clamp(1, 10))
    with pytest.raises(ValueError, match="level_temperature"):
        run(level_temperature=0.0)


# ---------------------------------------------------------------------------- level_guidance, guidance_steps


def test_level_guidance_samples_levels_from_the_guided_level_logits():
    net = _next_net()
    ids, levels = H.random_cells(1, V, min_len=4, max_len=4, seed=11, distinct=True)[0]
    u_ids, u_levels = ids[-1:], levels[-1:]
    gene = int(next(e for e in range(1, V) if e not in ids.tolist()))
    only = torch.zeros(V, dtype=torch.bool)
    only[gene] = True  # one drawable entity: every row draws `gene`, so its level law is the one to check
    w = 2.0
    with torch.inference_mode():
        c = net.level_logits(net(ids[None], levels[None])[:, -1], torch.tensor([gene]))[0].float()
        u = net.level_logits(net(u_ids[None], u_levels[None])[:, -1], torch.tensor([gene]))[0].float()
    expected = torch.softmax(u + w * (c - u), -1)  # level k is column k - 1
    n = 4000
    out = sample_decode(
        net,
        *_repeat(ids, levels, n),
        None,
        1,
        candidates=only,
        level_guidance=w,
        unconditional=(*_repeat(u_ids, u_levels, n), None),
        generator=torch.Generator().manual_seed(7),
    )
    assert (out.tokens[:, 0] == gene).all()
    freq = torch.bincount(out.levels[:, 0] - 1, minlength=10).float() / n
    assert ((freq - expected).abs() <= 5 * torch.sqrt(expected * (1 - expected) / n) + 2e-3).all()
    assert (expected - torch.softmax(c, -1)).abs().max() > 0.05  # the guidance did change the law


def test_level_guidance_leaves_the_entities_alone_and_one_changes_nothing():
    net = _next_net()
    ids, levels, mask = H.left_pad(H.random_cells(64, V, min_len=3, max_len=6, seed=12))
    uncond = (ids[:, -1:], levels[:, -1:], None)

    def run(**kw):
        return sample_decode(net, ids, levels, mask, 1, generator=torch.Generator().manual_seed(8), **kw)

    plain = run()
    same = run(level_guidance=1.0, unconditional=uncond)
    assert torch.equal(plain.tokens, same.tokens)
    assert torch.equal(plain.levels, same.levels)
    guided = run(level_guidance=3.0, unconditional=uncond)
    assert torch.equal(plain.tokens, guided.tokens)  # the first draw of each row is its entity, with the same law
    assert not torch.equal(plain.levels, guided.levels)
    with pytest.raises(ValueError, match="unconditional"):
        run(level_guidance=2.0)
    with pytest.raises(ValueError, match="level_guidance"):
        run(level_guidance=-1.0, unconditional=uncond)


def test_guidance_steps_guides_only_the_first_draws():
    cells = H.random_cells(6, V, min_len=2, max_len=8, seed=13)
    ids, levels, mask = H.left_pad(cells)
    uncond = (ids[:, -1:], levels[:, -1:], None)

    def run(**kw):
        return sample_decode(NET, ids, levels, mask, 12, generator=torch.Generator().manual_seed(9), **kw)

    plain, guided = run(), run(guidance=3.0, unconditional=uncond)
    assert not torch.equal(plain.tokens, guided.tokens)
    none = run(guidance=3.0, unconditional=uncond, guidance_steps=0)
    assert torch.equal(none.tokens, plain.tokens)
    assert torch.equal(none.lengths, plain.lengths)
    every = run(guidance=3.0, unconditional=uncond, guidance_steps=12)
    assert torch.equal(every.tokens, guided.tokens)
    assert torch.equal(every.lengths, guided.lengths)
    first = run(guidance=3.0, unconditional=uncond, guidance_steps=1)
    assert torch.equal(first.tokens[:, 0], guided.tokens[:, 0])
    with pytest.raises(ValueError, match="guidance_steps"):
        run(guidance=3.0, unconditional=uncond, guidance_steps=-1)
