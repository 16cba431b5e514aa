"""The thin model class: each method is its recipe's face (signature, docstring), and train()'s grouped options."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from lightning.pytorch.callbacks import Callback

import scmulan
from scmulan.model import _annotation, _generation, _training, _training_defaults
from scmulan.model._parts import ModelParts
from scmulan.model._training_defaults import default_epochs


@pytest.mark.parametrize(
    ("method", "recipe", "bound"),
    [
        ("annotate", _annotation.annotate, 1),
        ("predict_metadata", _annotation.predict_metadata, 1),
        ("generate", _generation.generate, 1),
        ("train", _training.train, 2),
    ],
)
def test_methods_show_their_recipes_parameters_and_documentation(method, recipe, bound):
    shown = inspect.signature(getattr(scmulan.SCMULAN, method))
    own = list(inspect.signature(recipe).parameters)[bound:]
    assert list(shown.parameters) == ["self", *own]  # what help() and the API docs show
    assert getattr(scmulan.SCMULAN, method).__doc__ == recipe.__doc__
    assert "Parameters" in recipe.__doc__


def test_parts_are_the_models_state(trained):
    parts = trained.parts()
    assert isinstance(parts, ModelParts)
    assert parts.network is trained.module
    assert parts.vocab is trained.vocab
    assert parts.layout.max_length == trained.max_length_
    assert parts.trained_tasks == tuple(trained.trained_tasks_)
    assert parts.annotation_fields == trained.annotation_fields == ["coarse_cell_type", "cell_type"]


def _weights(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.module.state_dict().items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    return digest.hexdigest()


def test_the_old_spelling_of_grouped_options_still_trains_the_same_model(reference):
    run = {"max_epochs": 1, "batch_size": 32, "train_size": 1.0, "enable_progress_bar": False}
    grouped = scmulan.SCMULAN(reference, config="tiny")
    grouped.train(plan_kwargs={"weight_decay": 0.05}, data_kwargs={"context_dropout": 0.2}, **run)
    old = scmulan.SCMULAN(reference, config="tiny")
    with pytest.warns(FutureWarning, match=r"train\(context_dropout=\.\.\.\)` is now spelt `train\(data_kwargs="):
        with pytest.warns(FutureWarning, match=r"plan_kwargs=\{'weight_decay'"):
            old.train(weight_decay=0.05, context_dropout=0.2, **run)
    assert _weights(old) == _weights(grouped)


def test_unknown_sentence_options_are_refused_before_training(reference):
    model = scmulan.SCMULAN(reference, config="tiny")
    with pytest.raises(ValueError, match=r"`data_kwargs` has unknown options \['dropout'\]; the options are"):
        model.train(max_epochs=1, data_kwargs={"dropout": 0.1})
    assert not model.is_trained_


def test_default_task_shares_follow_the_network_width():
    assert _training_defaults.default_task_shares(64) == (1.0, 3.0, 1.0)  # tiny: annotation gets three shares
    assert _training_defaults.default_task_shares(128) == (1.0, 1.0, 1.0)  # small and wider: equal shares
    assert _training_defaults.default_task_shares(1120) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(("width", "shares", "other"), [(64, (1, 3, 1), (1, 1, 1)), (128, (1, 1, 1), (1, 3, 1))])
def test_train_uses_the_shares_of_its_width_by_default(reference, width, shares, other):
    run = {"max_epochs": 1, "batch_size": 32, "train_size": 1.0, "enable_progress_bar": False, "seed": 0}
    weights = {}
    for name, plan in (
        ("default", {}),
        ("explicit", {"task_loss_weights": shares}),
        ("other", {"task_loss_weights": other}),
    ):
        model = scmulan.SCMULAN(reference, config="tiny", n_embd=width, seed=0)
        model.train(plan_kwargs=plan, **run)
        weights[name] = _weights(model)
    assert weights["default"] == weights["explicit"]
    assert weights["default"] != weights["other"]  # the shares do change training: the check above is not vacuous


def test_an_unknown_task_share_rule_is_refused_before_training(reference):
    model = scmulan.SCMULAN(reference, config="tiny")
    with pytest.raises(ValueError, match="must be 'auto', None or one share per task"):
        model.train(max_epochs=1, plan_kwargs={"task_loss_weights": "equal"}, enable_progress_bar=False)
    assert not model.is_trained_


def test_default_epochs_give_a_small_reference_enough_steps():
    assert default_epochs(150) == 150  # 5 steps per epoch at batch 32: 750 steps
    assert default_epochs(504) == 47
    assert default_epochs(100_000) == 10  # large data keep the former default
    assert default_epochs(1) == 750
    assert default_epochs(1, batch_size=1) == 750
    assert default_epochs(3) == default_epochs(30)  # one step per epoch either way
    epochs = [default_epochs(n) for n in (10, 100, 1_000, 10_000)]
    assert epochs == sorted(epochs, reverse=True)  # fewer epochs for more cells, never fewer than 10
    assert default_epochs(100, batch_size=64) > default_epochs(100, batch_size=16) / 4


class _EpochCounter(Callback):
    """Counts finished training epochs and the optimiser steps made."""

    def __init__(self):
        self.epochs = self.steps = 0

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs += 1
        self.steps = trainer.global_step


def test_train_runs_the_default_epochs_of_its_training_cells(reference, monkeypatch):
    monkeypatch.setattr(_training_defaults, "AUTO_MIN_STEPS", 12)  # a short run: the rule, not the constants
    monkeypatch.setattr(_training_defaults, "AUTO_EPOCH_RANGE", (1, 1000))
    model = scmulan.SCMULAN(reference, config="tiny", seed=0)
    counter = _EpochCounter()
    model.train(batch_size=64, train_size=0.5, enable_progress_bar=False, callbacks=[counter])  # max_epochs="auto"
    n_train = len(model.train_indices_)
    assert counter.epochs == default_epochs(n_train, 64) == -(-12 // -(-n_train // 64))
    assert counter.steps >= 12


def test_auto_epochs_leave_max_steps_in_charge(reference):
    model = scmulan.SCMULAN(reference, config="tiny", seed=0)
    counter = _EpochCounter()
    model.train(batch_size=64, train_size=1.0, max_steps=3, enable_progress_bar=False, callbacks=[counter])
    assert counter.steps == 3


def test_a_bad_max_epochs_names_the_choices_before_training(reference):
    model = scmulan.SCMULAN(reference, config="tiny")
    with pytest.raises(ValueError, match=r"`max_epochs` must be a positive integer, 'auto' \(enough epochs"):
        model.train(max_epochs="many", enable_progress_bar=False)
    assert not model.is_trained_
