"""Batched cached decoding against naive oracles (the original scMulan's algorithm: a full forward over the whole
growing sequence at every step, one cell at a time) and the invariants of sampling."""

from __future__ import annotations

import nn_helpers as H  # tests/nn/_helpers.py, loaded by tests/nn/conftest.py
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.nn import greedy_decode, hierarchical_decode, sample_decode

TOL = 1e-5
V = 40
END = 0
NET = H.build_net(V)


# ---------------------------------------------------------------------------- greedy


def naive_greedy(net, ids, levels, n_steps, *, ban_prompt="none", banned=None, allowed=None):
    """The original scMulan's ``generate_cellGenesis(top_k=1)`` for ONE cell, written out plainly.

    Every step runs ``net`` over the whole sequence so far (no cache, no padding), takes the head outputs at the last
    position, bans ``banned``, bans every entity already in the sequence except the most recent position's
    (``ban_prompt="all_but_last"``: the original masks ``ids[:-1]``), optionally restricts to ``allowed[step]``, takes
    the arg-max and appends it with level ``clamp(round(value), 0, 10)``.
    Returns tokens, levels, probabilities of the choices, raw logits/values per step and the final hidden states.
    """
    ids, levels = ids.clone(), levels.clone()
    toks, lvls, probs, raw_logits, raw_values = [], [], [], [], []
    with torch.inference_mode():
        for step in range(n_steps):
            hidden = net(ids[None], levels[None])[0]
            logits, values = net.heads(hidden[-1])
            raw_logits.append(logits)
            raw_values.append(values)
            ban = torch.zeros(V, dtype=torch.bool)
            if banned is not None:
                ban |= banned
            if ban_prompt == "all_but_last":
                ban[ids[:-1]] = True
            if allowed is not None and allowed[step] is not None:
                ban |= ~allowed[step]
            masked = logits.masked_fill(ban, float("-inf"))
            tok = int(masked.argmax())
            lvl = int(torch.clamp(torch.round(values[tok]), 0, 10))
            toks.append(tok)
            lvls.append(lvl)
            probs.append(float(torch.softmax(masked, -1)[tok]))
            if step < n_steps - 1:
                ids = torch.cat([ids, torch.tensor([tok])])
                levels = torch.cat([levels, torch.tensor([lvl])])
        final_hidden = net(ids[None], levels[None])[0]
    return toks, lvls, probs, torch.stack(raw_logits), torch.stack(raw_values), final_hidden


@pytest.mark.parametrize("ban_prompt", ["none", "all_but_last"])
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_decode_equals_the_naive_full_recompute(ban_prompt, seed):
    n_steps = 4
    cells = H.random_cells(6, V, min_len=1, max_len=14, seed=seed)
    ids, levels, mask = H.left_pad(cells, extra=seed)
    out = greedy_decode(NET, ids, levels, mask, n_steps, ban_prompt=ban_prompt, return_logits=True)
    for b, (i, lv) in enumerate(cells):
        toks, lvls, probs, logits, values, final = naive_greedy(NET, i, lv, n_steps, ban_prompt=ban_prompt)
        assert out.tokens[b].tolist() == toks
        assert out.levels[b].tolist() == lvls
        assert torch.allclose(out.probs[b], torch.tensor(probs), atol=TOL)
        assert float((out.entity_logits[b] - logits).abs().max()) < TOL
        assert float((out.values[b] - values).abs().max()) < TOL
        # hidden: the last two prompt positions, then the first n_steps - 1 generated positions
        L = len(i)
        if L >= 2:
            assert float((out.hidden[b] - final[L - 2 :]).abs().max()) < TOL
        else:  # a one-token prompt: the documented duplicate of its only position
            assert float((out.hidden[b, 1:] - final).abs().max()) < TOL
    assert out.n_generated.tolist() == [n_steps] * len(cells)


def test_ban_prompt_matters():
    # The two masking rules really differ on these cells (so the parametrised test above checks two behaviours).
    cells = H.random_cells(6, V, min_len=8, max_len=14, seed=5)
    ids, levels, mask = H.left_pad(cells)
    a = greedy_decode(NET, ids, levels, mask, 4, ban_prompt="none")
    b = greedy_decode(NET, ids, levels, mask, 4, ban_prompt="all_but_last")
    assert not torch.equal(a.tokens, b.tokens)
    for row, (i, _) in enumerate(cells):  # "all_but_last" never repeats an earlier prompt entity
        seen = set(i[:-1].tolist())
        assert not seen & set(b.tokens[row, :1].tolist())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n_allowed=st.integers(1, 6), ban_prompt=st.sampled_from(["none", "all_but_last"]))
def test_constrained_greedy_only_emits_allowed_tokens(seed, n_allowed, ban_prompt):
    g = torch.Generator().manual_seed(seed)
    n_steps = 3
    if ban_prompt == "none":
        cells = H.random_cells(4, V, min_len=1, max_len=10, seed=seed)
        pool = torch.arange(V)
    else:
        # "all_but_last" bans every entity already in the sequence except the most recent one: prompts use ids
        # 1..V/2-1 only and the constraints draw from the ids no prompt holds, and step 2 may not allow the token
        # chosen at step 0 (banned by then), so every step keeps a choice (see the next test for when none is left)
        cells = H.random_cells(4, V // 2, min_len=1, max_len=10, seed=seed)
        pool = torch.arange(V // 2, V)
    ids, levels, mask = H.left_pad(cells)
    drawn = pool[torch.randperm(len(pool), generator=g)]
    allowed = [torch.zeros(V, dtype=torch.bool) for _ in range(n_steps)]
    allowed[0][drawn[:n_allowed]] = True
    allowed[2][drawn[n_allowed : 2 * n_allowed] if ban_prompt != "none" else drawn[-n_allowed:]] = True
    allowed[1] = None  # an unconstrained step in between
    out = greedy_decode(NET, ids, levels, mask, n_steps, allowed=allowed, ban_prompt=ban_prompt)
    for step, m in enumerate(allowed):
        if m is not None:
            assert m[out.tokens[:, step]].all()
    assert (out.probs > 0).all()
    for b, (i, lv) in enumerate(cells):
        toks, *_ = naive_greedy(NET, i, lv, n_steps, allowed=allowed, ban_prompt=ban_prompt)
        assert out.tokens[b].tolist() == toks


def test_a_step_with_every_entity_banned_ends_the_cell():
    # Step 2 allows only the token every cell chose at step 0, which "all_but_last" bans by then: nothing is left to
    # choose, and the decoder emits <E> with probability 0 (never an arbitrary id with a NaN probability).
    cells = H.random_cells(5, V // 2, min_len=1, max_len=8, seed=3)
    ids, levels, mask = H.left_pad(cells)
    only = torch.zeros(V, dtype=torch.bool)
    only[V - 1] = True
    not_end = torch.ones(V, dtype=torch.bool)
    not_end[END] = False
    allowed = [only, not_end, only, None]
    out = greedy_decode(NET, ids, levels, mask, 4, allowed=allowed, ban_prompt="all_but_last", stop_at_end=True)
    assert (out.tokens[:, 0] == V - 1).all()
    assert (out.tokens[:, 1] != END).all()
    assert (out.tokens[:, 2] == END).all()
    assert (out.probs[:, 2] == 0).all()
    assert not out.probs.isnan().any()
    assert out.n_generated.tolist() == [3] * len(cells)
    # the same when a static ban covers the whole vocabulary from the first step
    out = greedy_decode(NET, ids, levels, mask, 2, banned=torch.ones(V, dtype=torch.bool))
    assert (out.tokens == END).all()
    assert (out.probs == 0).all()


def test_constraints_bind_and_banned_tokens_never_appear():
    cells = H.random_cells(8, V, min_len=2, max_len=12, seed=21)
    ids, levels, mask = H.left_pad(cells)
    free = greedy_decode(NET, ids, levels, mask, 3)
    # allow only tokens the unconstrained decoder did not pick at step 0: the constraint must change the output
    allowed0 = torch.ones(V, dtype=torch.bool)
    allowed0[free.tokens[:, 0]] = False
    out = greedy_decode(NET, ids, levels, mask, 3, allowed=[allowed0, None, None])
    assert allowed0[out.tokens[:, 0]].all()
    assert not torch.equal(out.tokens[:, 0], free.tokens[:, 0])
    banned = torch.zeros(V, dtype=torch.bool)
    banned[free.tokens.flatten()] = True
    out = greedy_decode(NET, ids, levels, mask, 3, banned=banned)
    assert not banned[out.tokens].any()
    for b, (i, lv) in enumerate(cells):
        assert out.tokens[b].tolist() == naive_greedy(NET, i, lv, 3, banned=banned)[0]


def test_stop_at_end_counts_up_to_the_first_end():
    cells = H.random_cells(5, V, min_len=2, max_len=9, seed=2)
    ids, levels, mask = H.left_pad(cells)
    only_end = torch.zeros(V, dtype=torch.bool)
    only_end[END] = True
    no_end = ~only_end
    out = greedy_decode(NET, ids, levels, mask, 4, allowed=[no_end, only_end, None, None], stop_at_end=True)
    assert (out.tokens[:, 1] == END).all()
    assert out.n_generated.tolist() == [2] * 5
    out = greedy_decode(NET, ids, levels, mask, 4, allowed=[no_end] * 4, stop_at_end=True)
    assert out.n_generated.tolist() == [4] * 5


def test_pooled_hidden_is_the_mean_over_the_pool_positions():
    cells = H.random_cells(3, V, min_len=2, max_len=9, seed=6)
    ids, levels, mask = H.left_pad(cells, extra=1)
    pool = levels > 3
    out = greedy_decode(NET, ids, levels, mask, 1, pool_mask=pool)
    with torch.inference_mode():
        for b, (i, lv) in enumerate(cells):
            hidden = NET(i[None], lv[None])[0]
            sel = lv > 3
            expected = hidden[sel].mean(0) if sel.any() else torch.zeros(hidden.shape[1])
            assert float((out.pooled[b] - expected).abs().max()) < TOL


# ---------------------------------------------------------------------------- sampling


def naive_sample(net, ids, levels, max_new, *, generator, gamma=1.0, temperature=1.0, top_k=None, candidates=None):
    """Sampling for ONE cell by full recompute at every step (ban every entity seen, ``ban_seen="all"``)."""
    ids, levels = ids.clone(), levels.clone()
    toks, lvls = [], []
    with torch.inference_mode():
        for _ in range(max_new):
            logits, values = net.heads(net(ids[None], levels[None])[0, -1])
            ban = torch.zeros(V, dtype=torch.bool)
            ban[ids] = True
            if candidates is not None:
                ban |= ~candidates
            logits = logits.masked_fill(ban, float("-inf")) / temperature
            if top_k is not None:
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, -1)
            probs[END] *= gamma
            tok = int(torch.multinomial(probs[None], 1, generator=generator))
            lvl = 0 if tok == END else int(torch.clamp(torch.round(values[tok]), 1, 10))
            toks.append(tok)
            lvls.append(lvl)
            if tok == END:
                break
            ids = torch.cat([ids, torch.tensor([tok])])
            levels = torch.cat([levels, torch.tensor([lvl])])
    return toks, lvls


def _sample(cells, seed, **kwargs):
    ids, levels, mask = H.left_pad(cells)
    g = torch.Generator().manual_seed(seed)
    return sample_decode(NET, ids, levels, mask, kwargs.pop("max_new_tokens", 25), generator=g, **kwargs)


def _rows(out):
    return [out.tokens[b, : out.lengths[b]].tolist() for b in range(out.tokens.shape[0])]


@pytest.mark.parametrize(("temperature", "top_k", "gamma"), [(1.0, None, 1.0), (0.7, 5, 0.3)])
def test_batch_of_one_sampling_equals_the_naive_sampler(temperature, top_k, gamma):
    # Same generator stream, one cell, one draw per step in the same order: the cached sampler must draw exactly the
    # tokens of the full-recompute sampler (probabilities agree to ~1e-7).
    for seed, (i, lv) in enumerate(H.random_cells(3, V, min_len=2, max_len=8, seed=9)):
        out = sample_decode(
            NET,
            i[None],
            lv[None],
            None,
            20,
            generator=torch.Generator().manual_seed(seed),
            gamma=gamma,
            temperature=temperature,
            top_k=top_k,
        )
        toks, lvls = naive_sample(
            NET,
            i,
            lv,
            20,
            generator=torch.Generator().manual_seed(seed),
            gamma=gamma,
            temperature=temperature,
            top_k=top_k,
        )
        assert _rows(out)[0] == toks
        assert out.levels[0, : out.lengths[0]].tolist() == lvls


def test_sampling_is_reproducible_with_a_seed_and_varies_across_seeds():
    cells = H.random_cells(4, V, min_len=2, max_len=8, seed=10)
    a, b, c = _sample(cells, 123), _sample(cells, 123), _sample(cells, 124)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.levels, b.levels)
    assert torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.tokens, c.tokens)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.sampled_from([0.1, 1.0, 3.0]), level_lo=st.integers(0, 5))
def test_sampling_invariants(seed, gamma, level_lo):
    level_range = (level_lo, level_lo + 3)
    g = torch.Generator().manual_seed(seed)
    candidates = torch.rand(V, generator=g) < 0.6
    candidates[END] = True
    cells = H.random_cells(5, V, min_len=1, max_len=8, seed=seed)
    max_new = 30
    out = _sample(cells, seed, max_new_tokens=max_new, candidates=candidates, gamma=gamma, level_range=level_range)
    assert out.tokens.shape == out.levels.shape == (5, max_new)
    for b, (i, _) in enumerate(cells):
        n = int(out.lengths[b])
        toks, lvls = out.tokens[b, :n], out.levels[b, :n]
        assert (out.tokens[b, n:] == -1).all()
        assert (out.levels[b, n:] == -1).all()
        assert len(set(toks.tolist())) == n  # never the same entity twice within a cell
        assert not set(toks.tolist()) & set(i.tolist())  # nor an entity of the prompt
        assert candidates[toks].all()  # only candidates (the end token is one)
        ended = bool(out.ended[b])
        assert ended == (n > 0 and int(toks[-1]) == END)
        assert (toks[:-1] != END).all() if n else True  # <E> only ever last
        assert n == max_new or ended  # a cell stops early only at <E>
        body = lvls[toks != END]
        assert ((body >= level_range[0]) & (body <= level_range[1])).all()
        assert (lvls[toks == END] == 0).all()


def test_compaction_does_not_change_a_single_cell():
    # With one cell, finishing it ends the loop, so compaction can never change the draws: identical outputs.
    for seed, (i, lv) in enumerate(H.random_cells(4, V, min_len=2, max_len=8, seed=13)):
        outs = [
            sample_decode(
                NET, i[None], lv[None], None, 30, generator=torch.Generator().manual_seed(seed), compact_fraction=f
            )
            for f in (0.0, 10.0)
        ]
        assert _rows(outs[0]) == _rows(outs[1])
        assert torch.equal(outs[0].levels, outs[1].levels)
        assert torch.equal(outs[0].ended, outs[1].ended)


def test_compaction_with_a_batch():
    # Batched sampling draws all rows of a step with one `torch.multinomial` call, so dropping finished rows changes
    # how the generator stream is split between rows from the first compaction on: with random draws, only the steps
    # up to and including the first `<E>` of the batch are comparable between compaction on (0.0: drop at once) and
    # off (10.0: never). With top_k=1 every draw is certain (a one-hot distribution), the stream no longer matters,
    # and the whole outputs must be identical: this checks `KVCache.select` and the row bookkeeping of compaction.
    cells = H.random_cells(7, V, min_len=1, max_len=12, seed=14, distinct=True)
    kwargs = {"max_new_tokens": V, "gamma": 1.0}
    on, off = (
        _sample(cells, 5, top_k=1, compact_fraction=0.0, **kwargs),
        _sample(cells, 5, top_k=1, compact_fraction=10.0, **kwargs),
    )
    assert torch.equal(on.tokens, off.tokens)
    assert torch.equal(on.levels, off.levels)
    assert torch.equal(on.lengths, off.lengths)
    assert torch.equal(on.ended, off.ended)
    assert on.ended.all()  # with V steps and every entity banned once seen, each cell ends
    assert len(set(on.lengths.tolist())) > 1  # cells ended at different steps: compaction really happened
    on, off = _sample(cells, 6, compact_fraction=0.0, **kwargs), _sample(cells, 6, compact_fraction=10.0, **kwargs)
    first_end = int(torch.minimum(on.lengths, off.lengths).min())
    assert torch.equal(on.tokens[:, :first_end], off.tokens[:, :first_end])


def test_temperature_must_be_positive():
    ids = torch.tensor([[1, 2]])
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            sample_decode(NET, ids, torch.zeros_like(ids), None, 5, temperature=t)


def test_no_new_tokens():
    out = sample_decode(NET, torch.tensor([[1, 2]]), torch.zeros(1, 2, dtype=torch.long), None, 0)
    assert out.tokens.shape == (1, 0)
    assert out.lengths.tolist() == [0]


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_a_cell_that_runs_out_of_candidates_ends_with_end(gamma):
    # With gamma=0 <E> is never drawn while a gene is left; once every candidate is in the sentence there is nothing
    # left to draw (only <E>, at probability 0): the cell is complete and ends with <E> instead of failing in
    # `multinomial`. With gamma=1 the same prompt must also end within the candidates.
    candidates = torch.zeros(V, dtype=torch.bool)
    candidates[[END, 30, 31, 32, 33]] = True
    cells = H.random_cells(3, 20, min_len=1, max_len=6, seed=4)
    out = _sample(cells, 0, max_new_tokens=20, candidates=candidates, gamma=gamma)
    assert out.ended.all()
    for b in range(len(cells)):
        toks = out.tokens[b, : out.lengths[b]].tolist()
        assert toks[-1] == END
        if gamma == 0.0:
            assert sorted(toks[:-1]) == [30, 31, 32, 33]  # every gene first, then <E>


def test_finished_rows_that_exhaust_their_candidates_do_not_break_the_batch():
    # Without compaction, finished rows stay in the batch and keep drawing (their draws are discarded). A row that
    # ended early and then saw every entity used to have no drawable entity left (NaN probabilities -> multinomial
    # error) while the other rows were still running.
    net = H.build_net(12, seed=3)
    short = (torch.tensor([5]), torch.tensor([3]))
    long_ = (torch.tensor([1, 2, 3]), torch.tensor([2, 2, 2]))
    ids, levels, mask = H.left_pad([short, long_])
    only_end = torch.zeros(12, dtype=torch.bool)
    only_end[END] = True
    for seed in range(5):
        out = sample_decode(
            net, ids, levels, mask, 30, generator=torch.Generator().manual_seed(seed), compact_fraction=10.0, gamma=0.05
        )
        assert out.lengths.max() <= 12
        assert out.ended.all()  # with 12 entities, every cell has drawn <E> within 12 steps
        for b in range(2):
            toks = out.tokens[b, : out.lengths[b]].tolist()
            assert len(set(toks)) == len(toks)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_allowed=st.integers(1, 8), ban_prompt=st.sampled_from(["none", "all_but_last"]))
def test_restricted_head_steps_equal_the_full_vocabulary_steps(seed, n_allowed, ban_prompt):
    # A step restricted to some entities computes the head rows of those only; return_logits=True forces the
    # full-vocabulary path. Choices, levels, <E>-when-stuck and hidden states must be the same, probabilities to TOL.
    g = torch.Generator().manual_seed(seed)
    cells = H.random_cells(6, V, min_len=1, max_len=10, seed=seed)
    ids, levels, mask = H.left_pad(cells)
    allowed = [torch.zeros(V, dtype=torch.bool) for _ in range(3)]
    for m in allowed:
        m[torch.randperm(V, generator=g)[:n_allowed]] = True
    allowed[1] = None
    banned = torch.zeros(V, dtype=torch.bool)
    banned[torch.randint(0, V, (3,), generator=g)] = True
    kwargs = {"allowed": allowed, "banned": banned, "ban_prompt": ban_prompt, "stop_at_end": True}
    fast = greedy_decode(NET, ids, levels, mask, 3, **kwargs)
    full = greedy_decode(NET, ids, levels, mask, 3, return_logits=True, **kwargs)
    assert torch.equal(fast.tokens, full.tokens)
    assert torch.equal(fast.levels, full.levels)
    assert torch.equal(fast.n_generated, full.n_generated)
    torch.testing.assert_close(fast.probs, full.probs, rtol=TOL, atol=TOL)
    torch.testing.assert_close(fast.hidden, full.hidden, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("restricted", [False, True])
def test_logit_bias_decodes_as_a_head_with_that_bias(restricted):
    # logit_bias (post-hoc logit adjustment) must act exactly like a bias added to the entity head, on the full
    # step and on the restricted step that computes only the allowed entities' head rows
    import copy

    cells = H.random_cells(6, V, min_len=2, max_len=10, seed=11)
    ids, levels, mask = H.left_pad(cells)
    bias = torch.randn(V, generator=torch.Generator().manual_seed(0)) * 3
    biased = copy.deepcopy(NET)
    head = biased.entity_head
    head.bias = torch.nn.Parameter(bias.clone() if head.bias is None else head.bias.detach() + bias)
    allowed = None
    if restricted:
        allowed = [torch.zeros(V, dtype=torch.bool) for _ in range(2)]
        allowed[0][V // 2 :] = True
        allowed[1][1 : V // 2] = True
    out = greedy_decode(NET, ids, levels, mask, 2, allowed=allowed, logit_bias=bias)
    expected = greedy_decode(biased, ids, levels, mask, 2, allowed=allowed)
    assert torch.equal(out.tokens, expected.tokens)
    torch.testing.assert_close(out.probs, expected.probs)
    plain = greedy_decode(NET, ids, levels, mask, 2, allowed=allowed)
    assert not torch.equal(out.tokens, plain.tokens)  # the bias changed some choices: the test can fail


# ---------------------------------------------------------------------------- hierarchical (marginal) decoding


def naive_marginal(net, ids, levels, first, second):
    """For ONE cell: every first candidate appended in turn and the whole sequence recomputed (no cache); returns
    the chosen pair, ``P(c)``, ``P(f | c)``, ``P(f)`` and the final hidden state at the chosen first candidate."""
    with torch.inference_mode():
        hidden = net(ids[None], levels[None])[0, -1]
        logits, values = net.heads(hidden)
        log_pc = torch.log_softmax(logits[first], -1)
        rows, states = [], []
        for c in first.tolist():
            lvl = torch.clamp(torch.round(values[c]), 0, 10).long()
            h = net(torch.cat([ids, torch.tensor([c])])[None], torch.cat([levels, lvl[None]])[None])[0, -1]
            rows.append(torch.log_softmax(net.heads(h)[0][second], -1))
            states.append(h)
    joint = log_pc[:, None] + torch.stack(rows)  # (K1, K2)
    marginal = joint.logsumexp(0)
    j = int(marginal.argmax())
    i = int(joint[:, j].argmax())
    return (
        int(first[i]),
        int(second[j]),
        float(log_pc[i].exp()),
        float(joint[i, j].exp() / log_pc[i].exp()),
        float(marginal[j].exp()),
        states[i],
    )


@pytest.mark.parametrize("gene_bag", [False, True])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_hierarchical_decode_equals_the_naive_sum_over_first_labels(gene_bag, padding):
    # the cache is rewound after each first candidate: a leak from one candidate's step into the next (keys or the
    # gene-bag sum) would show up here, as would a wrong sum or a wrong choice of the first label given the second
    net = H.build_net(V, gene_bag=gene_bag, seed=3)
    cells = H.random_cells(8, V, min_len=1, max_len=12, seed=5)
    ids, levels, mask = H.left_pad(cells, extra=1)
    if padding == "right":  # real tokens first
        order = torch.argsort(~mask, dim=1, stable=True)
        ids, levels, mask = ids.gather(1, order), levels.gather(1, order), mask.gather(1, order)
    first, second = torch.tensor([5, 9, 17, 30]), torch.tensor([2, 11, 12, 25, 33, 38])
    out = hierarchical_decode(net, ids, levels, mask, first, second, padding=padding)
    for b, (i, lv) in enumerate(cells):
        c, f, pc, pf_c, pf, state = naive_marginal(net, i, lv, first, second)
        assert out.tokens[b].tolist() == [c, f]
        torch.testing.assert_close(out.probs[b], torch.tensor([pc, pf_c]), rtol=TOL, atol=TOL)
        torch.testing.assert_close(out.marginal[b], torch.tensor(pf), rtol=TOL, atol=TOL)
        torch.testing.assert_close(out.hidden[b, 2], state, rtol=TOL, atol=TOL)


def test_hierarchical_decode_with_one_first_label_is_greedy_decoding():
    cells = H.random_cells(6, V, min_len=2, max_len=10, seed=7)
    ids, levels, mask = H.left_pad(cells)
    first, second = torch.tensor([13]), torch.tensor([2, 4, 8, 16, 32])
    allowed = [torch.zeros(V, dtype=torch.bool) for _ in range(2)]
    allowed[0][first], allowed[1][second] = True, True
    out = hierarchical_decode(NET, ids, levels, mask, first, second)
    greedy = greedy_decode(NET, ids, levels, mask, 2, allowed=allowed)
    assert torch.equal(out.tokens, greedy.tokens)
    assert torch.equal(out.levels, greedy.levels)
    torch.testing.assert_close(out.probs, greedy.probs)
    torch.testing.assert_close(out.marginal, greedy.probs[:, 1])  # one first label: P(f) = P(f | c)
    torch.testing.assert_close(out.hidden, greedy.hidden)


def test_hierarchical_decode_differs_from_greedy_where_first_labels_compete():
    # summing over the first labels must change some choices on a random network (the test can fail)
    cells = H.random_cells(64, V, min_len=2, max_len=10, seed=9)
    ids, levels, mask = H.left_pad(cells)
    first, second = torch.arange(1, 8), torch.arange(8, V)
    allowed = [torch.zeros(V, dtype=torch.bool) for _ in range(2)]
    allowed[0][first], allowed[1][second] = True, True
    out = hierarchical_decode(NET, ids, levels, mask, first, second)
    greedy = greedy_decode(NET, ids, levels, mask, 2, allowed=allowed)
    assert not torch.equal(out.tokens[:, 1], greedy.tokens[:, 1])
    assert bool((out.marginal >= out.probs.prod(1) - TOL).all())  # P(f) >= P(c, f)


def test_hierarchical_decode_needs_candidates_at_both_steps():
    ids, levels, mask = H.left_pad(H.random_cells(2, V, seed=1))
    with pytest.raises(ValueError, match="at least one candidate"):
        hierarchical_decode(NET, ids, levels, mask, torch.tensor([], dtype=torch.long), torch.tensor([3]))
