"""Training, continued training of a loaded model, fine-tuning with new categories and a frozen trunk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Callback

from scmulan import SCMULAN
from scmulan.model._resize import extend_network
from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.vocab import Vocabulary

NEW_TYPE = "Novel cell"


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


# ---------------------------------------------------------------------------------------------- train


def test_training_records_losses_and_validation_metrics(trained):
    history = trained.history_
    assert trained.is_trained_ is True
    for name in ("train_loss", "validation_loss", "validation_entity_loss", "validation_value_loss"):
        assert name in history, sorted(history)
        values = history[name].to_numpy()
        assert values.size >= 1
        assert np.isfinite(values).all()
        assert (values > 0).all()
    assert any(name.startswith("validation_accuracy_") for name in history)


def test_split_indices_are_disjoint_and_cover_the_data(trained, reference):
    train, val, test = trained.train_indices_, trained.validation_indices_, trained.test_indices_
    n = reference.n_obs
    assert (len(train), len(val), len(test)) == (240, 30, 30)
    together = np.concatenate([train, val, test])
    assert len(np.unique(together)) == n
    assert np.array_equal(np.sort(together), np.arange(n))


def test_an_untrained_model_is_not_trained(atlas):
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    assert SCMULAN(atlas, config="tiny").is_trained_ is False


def test_annotation_training_needs_cell_type_keys(atlas):
    SCMULAN.setup_anndata(atlas, organ_key="organ")
    model = SCMULAN(atlas, config="tiny")
    with pytest.raises(ValueError, match="cell_type_key"):
        model.train(max_epochs=1, tasks=("annotation",))
    assert model.is_trained_ is False


def test_by_default_training_runs_the_tasks_the_registered_fields_support(atlas):
    data = atlas[:64].copy()
    SCMULAN.setup_anndata(data, cell_type_key="cell_type")  # no metadata field: no metadata task
    model = SCMULAN(data, config="tiny")
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    assert model.is_trained_ is True
    assert model.metadata_fields_ == []
    model = SCMULAN(data, config="tiny")
    with pytest.raises(ValueError, match="metadata task needs a registered metadata field"):
        model.train(max_epochs=1, tasks=("generation", "annotation", "metadata"))
    assert model.is_trained_ is False


def test_a_task_never_trained_is_refused_until_the_model_learns_it(atlas, tmp_path):
    data = atlas[:64].copy()
    SCMULAN.setup_anndata(data, organ_key="organ", cell_type_key="cell_type")
    model = SCMULAN(data, config="tiny")
    model.train(max_epochs=1, batch_size=32, tasks=("generation", "annotation"), enable_progress_bar=False)
    assert model.trained_tasks_ == ["generation", "annotation"]
    with pytest.raises(ValueError, match=r"trained only on \['generation', 'annotation'\].*include 'metadata'"):
        model.predict_metadata(data, fields=["organ"], progress=False)
    assert model.annotate(data, progress=False).shape[0] == data.n_obs  # what it learnt still works
    model.save(tmp_path / "model")
    loaded = SCMULAN.load(tmp_path / "model", adata=data)
    assert loaded.trained_tasks_ == ["generation", "annotation"]
    with pytest.raises(ValueError, match="trained only on"):
        loaded.predict_metadata(data, fields=["organ"], progress=False)
    loaded.train(max_epochs=1, batch_size=32, tasks=("metadata",), enable_progress_bar=False)  # fine-tune it in
    assert loaded.trained_tasks_ == ["generation", "annotation", "metadata"]
    predicted = loaded.predict_metadata(data, fields=["organ"], progress=False)
    assert set(predicted["organ"].dropna()) <= set(data.obs["organ"].dropna())


def test_the_default_training_learns_every_task_of_the_registered_fields(trained):
    assert trained.trained_tasks_ == ["generation", "annotation", "metadata"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
        ({"batch_size": 2.5}, "`batch_size` must be a positive integer"),
        ({"accumulate_grad_batches": 0}, "`accumulate_grad_batches` must be a positive integer"),
        ({"max_epochs": 0}, "`max_epochs` must be a positive integer, 'auto'"),
        ({"max_epochs": True}, "`max_epochs` must be a positive integer, 'auto'"),
    ],
)
def test_bad_training_sizes_are_refused_before_training(atlas, kwargs, match):
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    model = SCMULAN(atlas, config="tiny")
    with pytest.raises(ValueError, match=match):
        model.train(**{"max_epochs": 1, **kwargs})
    assert model.is_trained_ is False


def test_unknown_tasks_are_refused(atlas):
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    model = SCMULAN(atlas, config="tiny")
    with pytest.raises(ValueError, match="`tasks` must be a non-empty subset"):
        model.train(max_epochs=1, tasks=("annotate_everything",))


# ---------------------------------------------------------------------------------------------- continue training


class _TrainingModeRecorder(Callback):
    """Records, at every training batch, the submodules of the network that are in eval mode (dropout off)."""

    def __init__(self):
        self.in_eval_mode: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.in_eval_mode.append([name for name, m in pl_module.named_modules() if not m.training])


@pytest.fixture(scope="module")
def continued(saved_dir, atlas_template):
    """The saved model loaded with new (unregistered) data attached, then trained one more short epoch."""
    data = atlas_template[:120].copy()
    model = SCMULAN.load(saved_dir, adata=data)
    before = _state(model)
    recorder = _TrainingModeRecorder()
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False, callbacks=[recorder])
    return model, data, before, recorder


def test_a_loaded_model_continues_training_on_attached_data(continued):
    model, data, before, _ = continued
    assert model.adata is data
    assert model.is_trained_ is True
    after = model.module.state_dict()
    assert not torch.equal(after["entity_embedding.weight"], before["entity_embedding.weight"])
    assert not torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    assert "validation_loss" in model.history_
    assert len(model.train_indices_) + len(model.validation_indices_) + len(model.test_indices_) == data.n_obs


def test_a_short_run_still_records_its_training_loss(continued):
    model, _, _, _ = continued  # 108 training cells in batches of 32: 4 steps
    logged = sorted(model.history_)
    assert "train_loss" in logged


def test_continued_training_runs_the_network_in_training_mode(continued):
    *_, recorder = continued
    assert recorder.in_eval_mode  # the callback saw the training batches
    assert all(not names for names in recorder.in_eval_mode), recorder.in_eval_mode[0][:5]


# ---------------------------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def finetuned(saved_dir, atlas_template):
    """The saved model fine-tuned (frozen trunk) on cells of which a third carry a cell type it has never seen."""
    model = SCMULAN.load(saved_dir)
    old_vocab, before = model.vocab, _state(model)
    data = atlas_template[:150].copy()
    cell_type = data.obs["cell_type"].astype(str).to_numpy()
    cell_type[:50] = NEW_TYPE
    data.obs["cell_type"] = pd.Categorical(cell_type)
    SCMULAN.setup_anndata(
        data, organ_key="organ", region_key="region", coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type"
    )
    model.finetune(data, max_epochs=1, freeze_trunk=True, batch_size=32, enable_progress_bar=False)
    return model, old_vocab, before


def test_finetune_refuses_raw_counts_and_changes_nothing(saved_dir, atlas):
    from scipy import sparse

    model = SCMULAN.load(saved_dir)
    vocab, before = model.vocab, _state(model)
    dense = atlas.X.toarray() if sparse.issparse(atlas.X) else np.asarray(atlas.X)
    atlas.X = sparse.csr_matrix(np.rint(np.expm1(dense) * 10).astype(np.float32))  # counts: pp.prepare forgotten
    fine = atlas.obs["cell_type"].astype(str).to_numpy()
    fine[:5] = NEW_TYPE
    atlas.obs["cell_type"] = pd.Categorical(fine)
    SCMULAN.setup_anndata(atlas, cell_type_key="cell_type")
    with pytest.raises(ValueError, match=r"`SCMULAN.finetune` needs log-normalised .*raw counts"):
        model.finetune(atlas, max_epochs=1)
    assert model.vocab is vocab  # no category added, no data attached, no weight touched
    assert model.adata is None
    after = model.module.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_finetune_appends_the_new_category_and_keeps_old_ids(finetuned):
    model, old, _ = finetuned
    assert len(model.vocab) == len(old) + 1
    assert model.vocab.token(len(old)) == ("cell_type", NEW_TYPE)
    assert all(model.vocab.token(i) == old.token(i) for i in range(len(old)))
    assert model.config.vocab_size == len(model.vocab)
    assert model.module.entity_embedding.weight.shape[0] == len(model.vocab)
    assert model.is_trained_ is True


def test_freeze_trunk_trains_only_embeddings_and_heads(finetuned):
    model, old, before = finetuned
    after = model.module.state_dict()
    trunk = [k for k in after if k.startswith(("blocks.", "ln_f."))]
    assert trunk
    for key in trunk:
        assert torch.equal(after[key], before[key]), key
    n_old = len(old)
    assert not torch.equal(after["entity_embedding.weight"][:n_old], before["entity_embedding.weight"])
    assert not torch.equal(after["entity_head.weight"][:n_old], before["entity_head.weight"])


def test_finetuned_model_can_annotate_the_new_category(finetuned, query):
    model, old, _ = finetuned
    labels = model.annotate(query, progress=False)
    assert set(labels["fine"].dropna()) <= set(model.vocab.categories("cell_type"))
    # Make the new entity overwhelmingly likely: constrained decoding must be allowed to emit it at the fine step
    # (and only there: the coarse step may only emit coarse types).
    new_id = model.vocab.token_id("cell_type", NEW_TYPE)
    bias = model.module.entity_head.bias
    saved = bias[new_id].clone()
    with torch.no_grad():
        bias[new_id] += 50.0
    try:
        boosted = model.annotate(query, progress=False)
    finally:
        with torch.no_grad():
            bias[new_id] = saved
    assert (boosted["fine"] == NEW_TYPE).all()
    assert set(boosted["coarse"]) <= set(old.categories("coarse_cell_type"))
    assert NEW_TYPE not in set(boosted["coarse"])


# ---------------------------------------------------------------------------------------------- extend_network


def _small_vocab() -> Vocabulary:
    return Vocabulary.build(
        [f"G{i}" for i in range(8)], {"organ": ["Lung", "Liver"], "cell_type": ["T", "B", "NK"]}, n_reserved=2
    )


def test_extend_network_keeps_old_rows_and_starts_new_ones_at_the_field_mean():
    old = _small_vocab()
    new = old.extend("cell_type", ["Mono", "DC"]).extend("sex", ["F"])
    torch.manual_seed(0)
    net = CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=len(old), gene_bag=True))
    with torch.no_grad():  # a trained gene bag: rows for the genes, zero rows for entities that carry no level
        net.gene_bag.weight[torch.as_tensor(old.gene_ids)] = torch.randn(len(old.gene_ids), net.config.n_embd)
    grown = extend_network(net, old, new)
    n_old = len(old)
    assert grown.config.vocab_size == len(new)

    ct = torch.as_tensor(old.field_ids("cell_type"))
    metadata = torch.as_tensor([i for i in range(n_old) if old.token(i)[0] in ("organ", "cell_type")])
    vocab_sized = ("entity_embedding.weight", "entity_head.weight", "entity_head.bias", "value_head.weight")
    for name in (*vocab_sized, "gene_bag.weight"):
        before, after = net.state_dict()[name], grown.state_dict()[name]
        assert after.shape[0] == len(new)
        assert torch.equal(after[:n_old], before), name
        for category in ("Mono", "DC"):  # a new category of a known field: mean of that field's rows
            torch.testing.assert_close(after[new.token_id("cell_type", category)], before[ct].mean(0))
        # a new field: mean of all metadata rows
        torch.testing.assert_close(after[new.token_id("sex", "F")], before[metadata].mean(0))
    for name, value in net.state_dict().items():  # everything not sized by the vocabulary is copied
        if not name.startswith(("entity_embedding", "entity_head", "value_head", "gene_bag")):
            assert torch.equal(grown.state_dict()[name], value), name

    # the grown network gives old sentences the same outputs over the old entities
    ids = torch.as_tensor([[int(old.gene_ids[0]), int(old.gene_ids[3]), old.task_id("<annotate>")]])
    levels = torch.as_tensor([[4, 10, 0]])
    net.eval()
    grown.eval()
    with torch.no_grad():
        logits_old, values_old = net.heads(net(ids, levels))
        logits_new, values_new = grown.heads(grown(ids, levels))
    torch.testing.assert_close(logits_new[..., :n_old], logits_old)
    torch.testing.assert_close(values_new[..., :n_old], values_old)


def test_extend_network_refuses_a_vocabulary_that_renumbers_old_entities():
    old = _small_vocab()
    other = Vocabulary.build([f"G{i}" for i in range(9)], {"organ": ["Lung", "Liver"], "cell_type": ["T", "B", "NK"]})
    net = CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=len(old)))
    with pytest.raises(ValueError, match="must extend the old one"):
        extend_network(net, old, other)
