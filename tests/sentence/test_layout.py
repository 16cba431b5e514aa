"""SentenceLayout: the one place that decides prompts, gene budgets and gene order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from scmulan.sentence import TASKS, SentenceLayout


def test_budgets_leave_room_for_what_follows_the_genes():
    layout = SentenceLayout(max_length=50)
    # training: metadata fields, the task token, <E> and one spare position
    assert layout.training_gene_budget(n_fields=4) == 50 - 4 - 3
    # inference: context, the task token and up to three decoded steps
    assert layout.decoding_gene_budget(n_context=2) == 50 - 2 - 4
    # generation: conditions, <generate> and the prompt genes
    assert layout.generation_budget(n_conditions=3, n_prompt_genes=5) == 50 - 3 - 1 - 5
    assert layout.generation_budget(3, max_length=10) == 10 - 3 - 1
    # a tiny layout still keeps one gene
    assert SentenceLayout(max_length=3).training_gene_budget(10) == 1
    assert SentenceLayout(max_length=3).decoding_gene_budget(10) == 1


def test_nothing_left_to_generate_is_refused_with_the_length():
    with pytest.raises(ValueError, match=r"`max_length` \(5\) leaves no room"):
        SentenceLayout(max_length=5).generation_budget(n_conditions=2, n_prompt_genes=2)


def test_prompt_tokens_and_bad_tasks():
    layout = SentenceLayout()
    assert [layout.prompt_token(t) for t in TASKS] == ["<generate>", "<annotate>", "<metadata>"]
    with pytest.raises(ValueError, match="Unknown task 'annotate'"):
        layout.prompt_token("annotate")


@pytest.mark.parametrize(("kwargs", "match"), [({"max_length": 1}, "max_length"), ({"generation_order": "x"}, "order")])
def test_bad_layouts_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SentenceLayout(**kwargs)


def test_the_generation_objective_decides_the_gene_order_of_training_sentences():
    assert SentenceLayout.for_objective(100, "next").generation_order == "descending"
    assert SentenceLayout.for_objective(100, "set").generation_order == "shuffle"
    spec = SentenceLayout.for_objective(100, "next").task_spec(["organ", "cell_type"], (1, 1, 0))
    assert spec.generation_order == "descending"
    assert spec.weights == (1, 1, 0)


def test_decoding_genes_keep_the_most_expressed_within_the_budget():
    X = sparse.csr_matrix(np.array([[5.0, 1.0, 3.0, 2.0, 4.0], [0.0, 1.0, 0.0, 0.0, 0.0]]))
    col_token = np.arange(10, 15)
    layout = SentenceLayout(max_length=2 + 0 + 4)  # two genes with no context
    genes = layout.decoding_genes(X, col_token, n_context=0)
    first = genes.ids[genes.offsets[0] : genes.offsets[1]]
    assert sorted(first.tolist()) == [10, 14]  # the values 5 and 4
    assert genes.lengths.tolist() == [2, 1]
    assert layout.decoding_genes(X, col_token, 0, truncate=False).lengths.tolist() == [5, 1]  # the original's way
    prompts = layout.inference_prompts(99, genes, context=np.array([[7], [-1]]))
    assert prompts.cell(0)[0][-2:].tolist() == [7, 99]  # genes, context, then the task token
    assert prompts.cell(1)[0].tolist()[-1] == 99
