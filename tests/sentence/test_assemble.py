"""Ragged assembly: segments concatenated cell by cell, inference prompts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.sentence import END_GROUP, GENE_SET_GROUP, PROMPT_GROUP, GeneSegments, Segment, Sentences, concat, prompts
from scmulan.sentence._ragged import offsets_from_lengths


def _segments_from_lists(per_cell: list[list[int]], levels_from: int = 0) -> GeneSegments:
    ids = np.array([t for cell in per_cell for t in cell], dtype=np.int64)
    lengths = np.array([len(c) for c in per_cell], dtype=np.int64)
    return GeneSegments(ids, (ids % 10 + 1) if levels_from else np.zeros_like(ids), offsets_from_lengths(lengths))


ragged_cells = st.integers(0, 6).flatmap(
    lambda n: st.lists(st.lists(st.integers(1, 500), max_size=5), min_size=n, max_size=n)
)


@settings(max_examples=100, deadline=None)
@given(ragged_cells, st.data())
def test_concat_is_cellwise_concatenation(genes_per_cell, data):
    n = len(genes_per_cell)
    genes = _segments_from_lists(genes_per_cell, levels_from=1)
    ctx = np.asarray(
        data.draw(st.lists(st.lists(st.integers(-1, 900), min_size=3, max_size=3), min_size=n, max_size=n))
    )
    ctx = ctx.reshape(n, 3).astype(np.int64)
    s = concat(
        [
            Segment.from_genes(genes, group=GENE_SET_GROUP),
            Segment.from_matrix(ctx, group="ordered"),
            Segment.constant(7, n, group=END_GROUP),
        ]
    )
    assert isinstance(s, Sentences)
    assert len(s) == n
    for i in range(n):
        ids, levels = s.cell(i)
        c = [t for t in ctx[i].tolist() if t >= 0]
        g = genes_per_cell[i]
        assert ids.tolist() == [*g, *c, 7]
        assert levels.tolist() == [t % 10 + 1 for t in g] + [0] * (len(c) + 1)
        groups = s.groups[s.offsets[i] : s.offsets[i + 1]].tolist()
        assert groups == [GENE_SET_GROUP] * len(g) + [2 + k for k in range(len(c))] + [END_GROUP]


def test_from_genes_with_row_mask_and_subset():
    genes = _segments_from_lists([[5, 4], [3], [], [9, 8, 7]], levels_from=1)
    seg = Segment.from_genes(genes, rows=np.array([True, False, True, True]))
    np.testing.assert_array_equal(seg.lengths, [2, 0, 0, 3])
    assert seg.ids.tolist() == [5, 4, 9, 8, 7]
    s = concat([seg, Segment.constant(1, 4)])
    sub = s.subset(np.array([3, 3, 1]))
    assert [sub.cell(k)[0].tolist() for k in range(3)] == [[9, 8, 7, 1], [9, 8, 7, 1], [1]]
    assert sub.groups.tolist() == [PROMPT_GROUP] * 9


def test_prompts_layout():
    genes = _segments_from_lists([[30, 20], []], levels_from=1)
    after = _segments_from_lists([[11], [12, 13]], levels_from=1)
    context = np.array([[100, -1], [-1, 101]])
    s = prompts(99, 2, genes=genes, context=context, prompt_genes=after)
    assert s.groups is None
    assert s.cell(0)[0].tolist() == [30, 20, 100, 99, 11]
    assert s.cell(0)[1].tolist() == [1, 1, 0, 0, 2]
    assert s.cell(1)[0].tolist() == [101, 99, 12, 13]
    assert s.cell(1)[1].tolist() == [0, 0, 3, 4]
    # generation prompts: conditions only
    g = prompts(5, 3, context=np.array([[1, 2], [1, -1], [-1, -1]]))
    assert [g.cell(i)[0].tolist() for i in range(3)] == [[1, 2, 5], [1, 5], [5]]
    assert g.levels.tolist() == [0] * 6
