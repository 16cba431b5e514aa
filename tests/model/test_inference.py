"""Inference through the model: a cell's outputs do not depend on the other cells of its batch, nor on padding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

ATOL = 1e-5


@pytest.fixture(scope="module")
def full(trained, query):
    """Annotation of all 300 query cells, in batches of 64 (cells of different lengths share a padded batch)."""
    return trained.annotate(query, return_embedding=True, progress=False)


def _assert_same_annotation(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.index) == list(b.index)
    for column in ("coarse", "fine"):
        assert list(a[column].astype(str)) == list(b[column].astype(str)), column
    # the raw probabilities (a calibrated model's map is piecewise linear and may stretch a 1e-6 difference)
    raw = "raw_confidence" if "raw_confidence" in a else "confidence"
    np.testing.assert_allclose(a[raw], b[raw], atol=ATOL, rtol=0)
    np.testing.assert_allclose(a["fine_confidence"], b["fine_confidence"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=1e-3, rtol=0)
    assert np.array_equal(a["n_genes"], b["n_genes"])


def test_annotation_frame(trained, query, full):
    labels, embedding = full
    assert list(labels.index) == list(query.obs_names)
    assert set(labels["coarse"].cat.categories) <= set(trained.vocab.categories("coarse_cell_type"))
    assert set(labels["fine"].cat.categories) <= set(trained.vocab.categories("cell_type"))
    assert labels["confidence"].between(0, 1).all()
    # the raw path probability is the product of the steps' probabilities; the trained model is calibrated (it had
    # validation cells), which maps it monotonically and keeps it as raw_confidence
    raw = trained.annotate(query, calibrated=False, progress=False)
    np.testing.assert_allclose(raw["confidence"], raw["coarse_confidence"] * raw["fine_confidence"], rtol=1e-5)
    np.testing.assert_allclose(labels["raw_confidence"], raw["confidence"], rtol=1e-6)
    expressed = np.diff(query.X.tocsr().indptr)  # every atlas gene is a model gene
    assert np.array_equal(labels["n_genes"], expressed)
    assert embedding.shape == (query.n_obs, trained.config.n_embd)
    assert embedding.dtype == np.float32


def test_a_subset_gives_the_same_outputs_as_within_the_full_data(trained, query, full):
    labels, embedding = full
    rows = np.arange(query.n_obs)[::7][::-1]  # every 7th cell, in reverse order
    sub_labels, sub_embedding = trained.annotate(query[rows].copy(), return_embedding=True, progress=False)
    _assert_same_annotation(sub_labels, labels.iloc[rows])
    np.testing.assert_allclose(sub_embedding, embedding[rows], atol=ATOL, rtol=0)


def test_a_subset_with_metadata_context_gives_the_same_outputs(trained, query, atlas_template):
    cells = query.copy()
    cells.obs["organ"] = atlas_template.obs["organ"].to_numpy()  # known metadata goes into the prompt
    labels, embedding = trained.annotate(cells, return_embedding=True, progress=False)
    rows = np.arange(cells.n_obs)[3::11]
    sub_labels, sub_embedding = trained.annotate(cells[rows].copy(), return_embedding=True, progress=False)
    _assert_same_annotation(sub_labels, labels.iloc[rows])
    np.testing.assert_allclose(sub_embedding, embedding[rows], atol=ATOL, rtol=0)
    # the context is really used: without it the embedding differs
    _, blind = trained.annotate(cells, use_metadata=False, return_embedding=True, progress=False)
    assert not np.allclose(blind, embedding, atol=ATOL)


def test_padded_batches_give_the_same_outputs_as_single_cells(trained, query, full):
    labels, embedding = full
    cells = query[:40].copy()
    lengths = np.diff(cells.X.tocsr().indptr)
    assert lengths.min() < lengths.max()  # the batch of 64 really pads
    single_labels, single_embedding = trained.annotate(cells, batch_size=1, return_embedding=True, progress=False)
    _assert_same_annotation(single_labels, labels.iloc[:40])
    np.testing.assert_allclose(single_embedding, embedding[:40], atol=ATOL, rtol=0)


def test_mean_embedding_and_metadata_do_not_depend_on_the_batch(trained, query):
    cells = query[:30].copy()
    mean_64 = trained.get_latent_representation(cells, pooling="mean", batch_size=64, progress=False)
    mean_1 = trained.get_latent_representation(cells, pooling="mean", batch_size=1, progress=False)
    np.testing.assert_allclose(mean_1, mean_64, atol=ATOL, rtol=0)
    meta_64 = trained.predict_metadata(cells, ["organ", "region"], batch_size=64, progress=False)
    meta_1 = trained.predict_metadata(cells, ["organ", "region"], batch_size=1, progress=False)
    assert meta_1["organ"].astype(str).tolist() == meta_64["organ"].astype(str).tolist()
    assert meta_1["region"].astype(str).tolist() == meta_64["region"].astype(str).tolist()
    np.testing.assert_allclose(meta_1["organ_confidence"], meta_64["organ_confidence"], atol=ATOL, rtol=0)


def test_pooling_choices(trained, query, full):
    _, annotation = full
    cells = query[:20].copy()
    np.testing.assert_allclose(trained.get_latent_representation(cells, progress=False), annotation[:20], atol=ATOL)
    mean = trained.get_latent_representation(cells, pooling="mean", progress=False)
    assert mean.shape == (20, trained.config.n_embd)
    assert not np.allclose(mean, annotation[:20])
    with pytest.raises(ValueError, match="`pooling` must be 'annotation' or 'mean'"):
        trained.get_latent_representation(cells, pooling="max", progress=False)


def test_the_registered_data_is_the_default_for_embeddings(trained, reference):
    assert trained.get_latent_representation(progress=False, pooling="mean").shape == (
        reference.n_obs,
        trained.config.n_embd,
    )


def test_cells_without_model_genes_get_missing_labels(trained, query):
    cells = query[:12].copy()
    X = cells.X.tolil()
    X[[2, 5, 9]] = 0
    cells.X = sparse.csr_matrix(X)
    with pytest.warns(UserWarning, match="3 cells express none of the model's genes"):
        labels = trained.annotate(cells, progress=False)
    empty = np.isin(np.arange(12), [2, 5, 9])
    assert labels["coarse"].isna().to_numpy().tolist() == empty.tolist()
    assert labels["fine"].isna().to_numpy().tolist() == empty.tolist()
    assert labels["confidence"].isna().to_numpy().tolist() == empty.tolist()
    assert (labels["n_genes"][empty] == 0).all()


def test_cells_without_model_genes_get_nan_mean_embeddings(trained, query):
    cells = query[:12].copy()
    X = cells.X.tolil()
    X[[1, 8]] = 0
    cells.X = sparse.csr_matrix(X)
    with pytest.warns(UserWarning, match="^2 cells express none of the model's genes; their mean-pooled") as record:
        mean = trained.get_latent_representation(cells, pooling="mean", progress=False)
    (warning,) = [w for w in record if "mean-pooled" in str(w.message)]
    assert warning.filename == __file__
    empty = np.isin(np.arange(12), [1, 8])
    assert np.isnan(mean[empty]).all()
    assert np.isfinite(mean[~empty]).all()
    full = trained.get_latent_representation(query[:12].copy(), pooling="mean", progress=False)
    np.testing.assert_allclose(mean[~empty], full[~empty], atol=ATOL, rtol=0)


def test_metadata_fields_the_model_cannot_predict_are_refused(trained, query):
    assert trained.metadata_fields_ == ["organ", "region"]
    with pytest.raises(ValueError, match="cannot predict \\['sex'\\]"):
        trained.predict_metadata(query, ["sex"], progress=False)


# ---------------------------------------------------------------------------- decoding options on the original model


@pytest.fixture(scope="module")
def legacy_model(legacy_dir):
    """The tiny random checkpoint in the original format, with the original vocabulary (2,222 tokens)."""
    import scmulan

    return scmulan.SCMULAN.from_legacy_checkpoint(legacy_dir / "tiny_ckpt.pt", legacy_dir / "meta_info.pt")


@pytest.fixture(scope="module")
def legacy_cells(legacy_dir):
    import anndata as ad

    return ad.read_h5ad(legacy_dir / "prepared_input_2000.h5ad")


@pytest.fixture
def decoded(monkeypatch):
    """Spy on the decoder the model calls: the keyword arguments and raw outputs of every call."""
    from scmulan.model import _annotation

    calls = []
    original = _annotation.decode_cells

    def spy(net, vocab, source, recipe, **kwargs):
        out = original(net, vocab, source, recipe, **kwargs)
        calls.append((recipe, out))
        return out

    monkeypatch.setattr(_annotation, "decode_cells", spy)
    return calls


def _expected_labels(model, tokens, field):
    """Oracle: a decoded id's category when it belongs to ``field``, else Unclassified."""
    vocab = model.vocab
    members = set(vocab.field_ids(field))
    return [vocab.token(int(t))[1] if int(t) in members else "Unclassified" for t in tokens]


def test_unconstrained_outputs_outside_the_field_are_unclassified(legacy_model, legacy_cells, decoded):
    labels = legacy_model.annotate(legacy_cells, constrained=False, progress=False)
    ((recipe, out),) = decoded
    assert recipe.allowed is None
    assert recipe.banned is None
    gene_ids = set(legacy_model.vocab.gene_ids)
    assert any(int(t) in gene_ids for t in out.tokens[:, :2].ravel())  # the random model really decodes genes here
    assert labels["coarse"].astype(str).tolist() == _expected_labels(legacy_model, out.tokens[:, 0], "coarse_cell_type")
    assert labels["fine"].astype(str).tolist() == _expected_labels(legacy_model, out.tokens[:, 1], "cell_type")
    genes = set(legacy_model.vocab.genes)
    assert not (set(labels["coarse"].astype(str)) | set(labels["fine"].astype(str))) & genes


def test_restrict_to_cell_types_applies_without_legacy(legacy_model, legacy_cells, decoded):
    labels = legacy_model.annotate(legacy_cells, constrained=False, restrict_to_cell_types=True, progress=False)
    ((recipe, out),) = decoded
    vocab = legacy_model.vocab
    keep = vocab.field_mask("coarse_cell_type") | vocab.field_mask("cell_type")
    keep[vocab.end_id] = True
    assert np.array_equal(recipe.banned, ~keep)
    assert keep[out.tokens[:, :2]].all()
    assert labels["fine"].astype(str).tolist() == _expected_labels(legacy_model, out.tokens[:, 1], "cell_type")
    assert (labels["fine"].astype(str) != "Unclassified").any()  # real cell types now reach the labels


def test_exclude_unclassified_removes_it_from_both_steps(legacy_model, legacy_cells, decoded):
    labels = legacy_model.annotate(legacy_cells, exclude_unclassified=True, progress=False)
    ((recipe, _),) = decoded
    unclassified = legacy_model.vocab.token_id("cell_type", "Unclassified")
    assert unclassified == legacy_model.vocab.token_id("coarse_cell_type", "Unclassified")
    assert recipe.allowed[0].sum() == len(legacy_model.vocab.field_ids("coarse_cell_type")) - 1
    assert not recipe.allowed[0][unclassified]
    assert not recipe.allowed[1][unclassified]
    assert "Unclassified" not in set(labels["coarse"].astype(str)) | set(labels["fine"].astype(str))


def test_exclude_unclassified_with_nothing_else_is_refused(toy_cells):
    import scmulan

    cells = toy_cells(20, 30)
    cells.X.data = np.round(np.expm1(cells.X.data))  # the toy cells are log1p(counts), which models refuse
    scmulan.pp.prepare(cells)
    cells.obs["coarse_cell_type"] = pd.Categorical(["Unclassified"] * cells.n_obs)
    scmulan.SCMULAN.setup_anndata(cells, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model = scmulan.SCMULAN(cells, config="tiny")
    with pytest.raises(ValueError, match="leaves no 'coarse_cell_type' category to decode"):
        model.annotate(cells, exclude_unclassified=True, progress=False)


def test_data_prepared_for_another_gene_set_keep_this_models_genes(trained, query, full):
    # prepare() against model A writes var["scmulan_gene"] with A's genes only; a model B must still find its genes
    # (by the variables' own names), with a warning, and give exactly the outputs of the unprepared data
    import warnings

    import scmulan

    labels, embedding = full
    cells = query.copy()
    other_genes = list(cells.var_names[:40]) + [f"NOT_HERE{i}" for i in range(10)]  # "model A"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prepare's own low-overlap notice
        scmulan.pp.prepare(cells, other_genes)
    assert cells.var["scmulan_gene"].notna().sum() == 40
    with pytest.warns(UserWarning, match=r"misses 60 of the model's genes that var_names name") as record:
        again, again_embedding = trained.annotate(cells, return_embedding=True, progress=False)
    (warning,) = [w for w in record if "misses 60" in str(w.message)]
    assert warning.filename == __file__
    _assert_same_annotation(again, labels)
    np.testing.assert_allclose(again_embedding, embedding, atol=ATOL, rtol=0)
    # prepared for this model: nothing to recover, no warning
    cells = query.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scmulan.pp.prepare(cells, trained)
        trained.annotate(cells, progress=False)


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_the_fallback_to_own_names_never_maps_a_gene_twice(toy_vocab):
    # (gene_token_ids, used by every inference call) a var prepare marked "duplicate", or whose own name is a gene
    # another var already has, stays unmapped; of two unresolved vars naming the same gene the first gets it
    import anndata as ad

    from scmulan.sentence import gene_token_ids

    names = ["G001", "G001", "G002", "g003", "G003", "G004", "G004"]
    cells = ad.AnnData(np.zeros((1, len(names)), dtype=np.float32), var=pd.DataFrame(index=pd.Index(names)))
    cells.var["scmulan_gene"] = pd.Categorical(["G001", None, None, "G003", None, None, None])
    cells.var["scmulan_gene_status"] = ["kept", "duplicate", "unknown", "case_matched", "unknown", "unknown", "unknown"]
    with pytest.warns(UserWarning, match=r"misses 2 of the model's genes .*\['G002', 'G004'\]"):
        ids = gene_token_ids(cells, toy_vocab)
    token = lambda g: toy_vocab.token_id("gene", g)
    assert ids.tolist() == [token("G001"), -1, token("G002"), token("G003"), -1, token("G004"), -1]
