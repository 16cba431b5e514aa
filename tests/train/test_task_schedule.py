"""Scheduled task mixing (``task_loss_weights_end``, ``task_loss_ramp``) and the validation sentences of train()."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scmulan
from scmulan.nn import CSentenceTransformer, TransformerConfig
from scmulan.sentence import TASKS, CellSource, TrainingSentenceDataset
from scmulan.train import ChainedBatches, CSentenceTrainingPlan, validation_dataset
from scmulan.train._plan import ramp_fraction

FIELDS = ["organ", "coarse_cell_type", "cell_type"]


@pytest.fixture
def net():
    return CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=50))


def _plan(net, total=90, **kwargs):
    plan = CSentenceTrainingPlan(net, task_loss_weights=(1.0, 3.0, 1.0), **kwargs)
    plan._total_steps = total  # what configure_optimizers records from the trainer
    return plan


def test_ramp_fraction_is_zero_then_linear_then_one():
    assert ramp_fraction(0.1, 0.2, 0.6) == 0.0
    assert ramp_fraction(0.4, 0.2, 0.6) == pytest.approx(0.5)
    assert ramp_fraction(0.6, 0.2, 0.6) == 1.0
    assert ramp_fraction(0.5, 0.5, 0.5) == 1.0  # a switch at start == end
    assert ramp_fraction(0.499, 0.5, 0.5) == 0.0


def test_an_annotation_finish_switches_the_shares_for_the_last_third_of_the_steps(net):
    plan = _plan(net, task_loss_weights_end=(0.1, 1.0, 0.1), task_loss_ramp=(2 / 3, 2 / 3))
    start, end = torch.tensor([1.0, 3.0, 1.0]), torch.tensor([0.1, 1.0, 0.1])
    for step in (0, 30, 59):
        torch.testing.assert_close(plan.scheduled_task_loss_weights(step), start)
    for step in (60, 75, 89):
        torch.testing.assert_close(plan.scheduled_task_loss_weights(step), end)


def test_a_linear_ramp_moves_the_shares_with_the_run(net):
    plan = _plan(net, total=100, task_loss_weights_end=(1.0, 13.0, 1.0), task_loss_ramp=(0.0, 1.0))
    shares = torch.stack([plan.scheduled_task_loss_weights(s) for s in (0, 50, 100)])
    torch.testing.assert_close(shares[:, 1], torch.tensor([3.0, 8.0, 13.0]))
    torch.testing.assert_close(shares[:, 0], torch.ones(3))


def test_without_a_schedule_the_shares_stay_the_same(net):
    plan = _plan(net)
    assert plan.task_loss_weights_end is None
    torch.testing.assert_close(plan.scheduled_task_loss_weights(80), torch.tensor([1.0, 3.0, 1.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task_loss_weights_end": (0.0, 1.0, 0.1)}, "switch generation off.*small positive share"),
        ({"task_loss_weights_end": (0.1, 1.0)}, "must be 3 non-negative shares"),
        ({"task_loss_weights_end": (0.1, -1.0, 0.1)}, "must be 3 non-negative shares"),
        ({"task_loss_ramp": (0.8, 0.2)}, "0 <= start <= end <= 1"),
        ({"task_loss_ramp": (0.5, 1.5)}, "0 <= start <= end <= 1"),
    ],
)
def test_bad_schedules_are_refused_naming_the_fix(net, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _plan(net, **kwargs)


def test_a_schedule_needs_start_shares(net):
    with pytest.raises(ValueError, match="give `task_loss_weights`"):
        CSentenceTrainingPlan(net, task_loss_weights=None, task_loss_weights_end=(0.1, 1.0, 0.1))


@pytest.fixture(scope="module")
def labelled(atlas):
    data = atlas[:120].copy()
    values = data.obs["cell_type"].astype(object).to_numpy()
    values[::4] = np.nan  # a quarter of the cells without a fine type: they cannot be annotated
    data.obs["cell_type"] = values
    scmulan.SCMULAN.setup_anndata(data, **{f"{f}_key": f for f in FIELDS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = scmulan.SCMULAN(data, config="tiny")
    return data, model


def _make(data, model):
    source = CellSource(data, model.vocab, obs_keys=model.obs_keys_)
    task_ids = {t: model.vocab.task_id(t) for t in ("<generate>", "<annotate>", "<metadata>")}

    def make(spec):
        return TrainingSentenceDataset(
            [source], spec, task_ids, end_id=model.vocab.end_id, pad_id=model.vocab.pad_id, batch_size=16,
            shuffle=False, warn_truncation=False, layout=model.layout,
        )  # fmt: skip

    return make


def _tasks(dataset) -> np.ndarray:
    return torch.cat([b["task"] for b in dataset]).numpy()


def test_every_labelled_validation_cell_gets_an_annotation_sentence(labelled):
    data, model = labelled
    make = _make(data, model)
    spec = model.layout.task_spec(model.obs_keys_, (1.0, 1.0, 0.0))
    sampled = _tasks(make(spec))  # one task drawn per cell: only some labelled cells are annotated
    n_labelled = int(data.obs["cell_type"].notna().sum())
    assert (sampled == TASKS.index("annotation")).sum() < n_labelled
    val = validation_dataset(make, spec)
    assert isinstance(val, ChainedBatches)
    tasks = _tasks(val)
    assert len(val) == len(list(val))
    assert (tasks == TASKS.index("annotation")).sum() == n_labelled
    assert (tasks == TASKS.index("generation")).sum() == data.n_obs  # the other task is still scored on every cell


def test_validation_without_annotation_or_with_annotation_alone(labelled):
    data, model = labelled
    make = _make(data, model)
    generation = model.layout.task_spec(model.obs_keys_, (1.0, 0.0, 0.0))
    assert set(_tasks(validation_dataset(make, generation))) == {TASKS.index("generation")}
    annotation = model.layout.task_spec(model.obs_keys_, (0.0, 1.0, 0.0))
    val = validation_dataset(make, annotation)
    assert not isinstance(val, ChainedBatches)
    assert (_tasks(val) == TASKS.index("annotation")).sum() == int(data.obs["cell_type"].notna().sum())


def test_train_accepts_a_schedule_and_scores_every_labelled_validation_cell(labelled):
    data, _ = labelled
    model = scmulan.SCMULAN(data, config="tiny")
    plan_kwargs = {"task_loss_weights_end": (0.1, 1.0, 0.1), "task_loss_ramp": (0.5, 0.5)}
    model.train(
        max_epochs=2, batch_size=16, train_size=0.7, tasks=("generation", "annotation"), plan_kwargs=plan_kwargs,
        enable_progress_bar=False, accelerator="cpu",
    )  # fmt: skip
    history = model.history_
    assert "validation_cell_type_macro_f1" in history
    assert "validation_entity_loss_generation" in history
    assert np.isfinite(history["train_loss"].to_numpy()).all()
    with pytest.raises(ValueError, match="switch generation off"):
        model.train(max_epochs=1, plan_kwargs={"task_loss_weights_end": (0.0, 1.0, 0.0)}, enable_progress_bar=False)
