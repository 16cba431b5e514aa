"""Training sentences: task sampling, per-task layout, target groups, context dropout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.sentence import (
    END_GROUP,
    GENE_SET_GROUP,
    PROMPT_GROUP,
    TASK_TOKENS,
    TASKS,
    GeneSegments,
    TaskSpec,
    sample_tasks,
    training_sentences,
)
from scmulan.sentence._ragged import offsets_from_lengths

FIELDS = ("organ", "region", "coarse_cell_type", "cell_type")
ANN = [2, 3]  # columns of coarse_cell_type, cell_type
META = [0, 1]
TASK_IDS = {"<generate>": 900, "<annotate>": 901, "<metadata>": 902}
END = 0
GENERATION, ANNOTATION, METADATA = (TASKS.index(t) for t in ("generation", "annotation", "metadata"))


def random_cells(n: int, seed: int, p_missing: float = 0.3, p_empty: float = 0.1):
    """Gene segments (ids 1..99, levels 1..10) and metadata ids (field j uses 100j+1..100j+9, -1 missing)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 8, size=n) * (rng.random(n) >= p_empty)
    ids = np.concatenate([rng.choice(np.arange(1, 100), size=k, replace=False) for k in lengths] + [np.zeros(0, int)])
    levels = rng.integers(1, 11, size=len(ids))
    genes = GeneSegments(ids.astype(np.int64), levels.astype(np.int64), offsets_from_lengths(lengths))
    meta = 100 * np.arange(1, len(FIELDS) + 1)[None] + rng.integers(1, 10, size=(n, len(FIELDS)))
    meta[rng.random(meta.shape) < p_missing] = -1
    return genes, meta.astype(np.int64)


def split_sentence(task: int, ids, levels, groups, genes_i, levels_i):
    """Check the layout of one sentence against its task; return (context ids, target ids)."""
    n_g = len(genes_i)
    task_tok = TASK_IDS[TASK_TOKENS[TASKS[task]]]
    assert ids[-1] == END
    assert groups[-1] == END_GROUP
    assert levels[-1] == 0
    assert (ids == task_tok).sum() == 1
    t = int(np.flatnonzero(ids == task_tok)[0])
    assert groups[t] == PROMPT_GROUP
    if task == GENERATION:  # context…, <generate>, genes…, <E>
        context = ids[:t]
        np.testing.assert_array_equal(ids[t + 1 : -1], genes_i)
        np.testing.assert_array_equal(levels[t + 1 : -1], levels_i)
        assert (groups[t + 1 : -1] == GENE_SET_GROUP).all()
        assert (groups[: t + 1] == PROMPT_GROUP).all()
        assert (levels[: t + 1] == 0).all()
        targets = ids[t + 1 : -1]
    else:  # genes…, context…, <task>, labels… (ordered), <E>
        np.testing.assert_array_equal(ids[:n_g], genes_i)
        np.testing.assert_array_equal(levels[:n_g], levels_i)
        assert n_g > 0
        context = ids[n_g:t]
        targets = ids[t + 1 : -1]
        assert (groups[: t + 1] == PROMPT_GROUP).all()
        assert (levels[n_g:] == 0).all()
        assert groups[t + 1 : -1].tolist() == list(range(2, 2 + len(targets)))  # ordered, unique groups
    return context, targets


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.5, 1.0]), st.integers(1, 40))
def test_training_sentence_layout(seed, dropout, n):
    genes, meta = random_cells(n, seed)
    spec = TaskSpec(FIELDS, context_dropout=dropout)
    s, task = training_sentences(genes, meta, spec, TASK_IDS, END, np.random.default_rng(seed))
    assert task.shape == (n,)
    assert (task >= 0).all()  # generation is always possible
    assert len(s) == n
    for k, c in enumerate(np.flatnonzero(task >= 0)):
        ids, levels = s.cell(k)
        groups = s.groups[s.offsets[k] : s.offsets[k + 1]]
        g_sl = slice(genes.offsets[c], genes.offsets[c + 1])
        context, targets = split_sentence(task[c], ids, levels, groups, genes.ids[g_sl], genes.levels[g_sl])
        known = meta[c][meta[c] >= 0]
        if task[c] == ANNOTATION:
            np.testing.assert_array_equal(targets, meta[c, ANN])  # coarse, then fine
            allowed = [t for t in meta[c, META] if t >= 0]
        elif task[c] == METADATA:
            np.testing.assert_array_equal(targets, [t for t in meta[c, META] if t >= 0])
            assert len(targets) > 0
            allowed = [t for t in meta[c, ANN] if t >= 0]
        else:
            allowed = list(known)
        assert not np.isin(context, targets).any()  # a target never leaks into the context
        # context: a subsequence of the allowed fields in column order
        positions = [allowed.index(t) for t in context]
        assert positions == sorted(positions)
        if dropout == 0.0:
            assert context.tolist() == allowed
        if dropout == 1.0:
            assert len(context) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_tasks_only_where_labels_exist(seed):
    genes, meta = random_cells(200, seed, p_missing=0.4, p_empty=0.2)
    for weights in [(1.0, 1.0, 1.0), (0.0, 1.0, 1.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]:
        spec = TaskSpec(FIELDS, weights=weights)
        task = sample_tasks(spec, genes.lengths, meta, np.random.default_rng(seed))
        no_genes = genes.lengths == 0
        assert not ((task == ANNOTATION) & ((meta[:, ANN] < 0).any(1) | no_genes)).any()
        assert not ((task == METADATA) & ((meta[:, META] < 0).all(1) | no_genes)).any()
        for t, w in enumerate(weights):
            if w == 0:
                assert not (task == t).any()
        # a cell that qualifies for a task of positive weight always gets a task
        can_ann = ~no_genes & (meta[:, ANN] >= 0).all(1)
        can_meta = ~no_genes & (meta[:, META] >= 0).any(1)
        qualifies = (weights[0] > 0) | (can_ann & (weights[1] > 0)) | (can_meta & (weights[2] > 0))
        np.testing.assert_array_equal(task >= 0, qualifies)


def test_task_weights_respected_roughly():
    genes, meta = random_cells(6000, 1, p_missing=0.0, p_empty=0.0)
    rng = np.random.default_rng(0)
    task = sample_tasks(TaskSpec(FIELDS, weights=(1.0, 1.0, 1.0)), genes.lengths, meta, rng)
    np.testing.assert_allclose(np.bincount(task, minlength=3) / len(task), [1 / 3] * 3, atol=0.03)
    task = sample_tasks(TaskSpec(FIELDS, weights=(3.0, 1.0, 0.0)), genes.lengths, meta, rng)
    np.testing.assert_allclose(np.bincount(task, minlength=3) / len(task), [0.75, 0.25, 0.0], atol=0.03)


def test_cells_qualifying_for_nothing_are_left_out():
    genes, meta = random_cells(50, 3, p_missing=0.5, p_empty=0.3)
    spec = TaskSpec(FIELDS, weights=(0.0, 1.0, 1.0))
    s, task = training_sentences(genes, meta, spec, TASK_IDS, END, np.random.default_rng(0))
    assert (task == -1).any()
    assert len(s) == (task >= 0).sum()
    # the kept sentences are those of the cells with a task, in input order (their gene segments lead)
    for k, c in enumerate(np.flatnonzero(task >= 0)):
        g = genes.ids[genes.offsets[c] : genes.offsets[c + 1]]
        np.testing.assert_array_equal(s.cell(k)[0][: len(g)], g)


def test_fine_labels_only_and_custom_metadata_fields():
    genes, meta = random_cells(100, 4, p_missing=0.0, p_empty=0.0)
    fields = ("organ", "cell_type")
    meta2 = meta[:, [0, 3]]
    spec = TaskSpec(fields, weights=(0.0, 1.0, 0.0), context_dropout=0.0)
    s, task = training_sentences(genes, meta2, spec, TASK_IDS, END, np.random.default_rng(0))
    assert (task == ANNOTATION).all()
    for k in range(len(s)):
        ids = s.cell(k)[0]
        assert ids[-2] == meta2[k, 1]  # fine type alone, then <E>
        assert ids[-3] == TASK_IDS["<annotate>"]
        assert ids[-4] == meta2[k, 0]  # organ as context
    spec = TaskSpec(FIELDS, weights=(0.0, 0.0, 1.0), metadata_fields=("region",), context_dropout=0.0)
    s, task = training_sentences(genes, meta, spec, TASK_IDS, END, np.random.default_rng(0))
    for k in range(len(s)):
        ids = s.cell(k)[0]
        assert ids[-3:].tolist() == [TASK_IDS["<metadata>"], meta[k, 1], END]
        assert ids[-6:-3].tolist() == [meta[k, 0], meta[k, 2], meta[k, 3]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": (1.0, 1.0)}, "weights"),
        ({"weights": (1.0, -1.0, 1.0)}, "weights"),
        ({"weights": (0.0, 0.0, 0.0)}, "weights"),
        ({"context_dropout": 1.5}, "context_dropout"),
        ({"metadata_fields": ("age",)}, "metadata_fields"),
        ({"fields": ("cell_type", "coarse_cell_type")}, "order"),
    ],
)
def test_task_spec_rejects_bad_settings(kwargs, match):
    kwargs = {"fields": FIELDS, **kwargs}
    with pytest.raises(ValueError, match=match):
        TaskSpec(**kwargs)


def test_task_spec_columns():
    spec = TaskSpec(FIELDS)
    assert spec.annotation_columns.tolist() == [False, False, True, True]
    assert spec.metadata_columns.tolist() == [True, True, False, False]


def test_gene_dropout_thins_prompt_genes_only():
    from scmulan.sentence import GeneSegments
    from scmulan.sentence._tasks import drop_genes

    lengths = np.array([50, 50, 1, 0])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.arange(offsets[-1], dtype=np.int64)
    genes = GeneSegments(ids, np.ones_like(ids), offsets)
    rows = np.array([True, False, True, True])
    out = drop_genes(genes, rows, 0.5, np.random.default_rng(0))
    kept = out.lengths
    assert 10 < kept[0] < 40  # about half of cell 0
    assert kept[1] == 50  # not a row to thin
    assert kept[2] == 1  # every cell keeps a gene when it has one
    assert kept[3] == 0
    assert set(out.ids[out.offsets[0] : out.offsets[1]]) <= set(ids[:50])
    with pytest.raises(ValueError, match="gene_dropout"):
        TaskSpec(fields=("cell_type",), gene_dropout=1.0)
