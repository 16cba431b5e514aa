"""Validation macro-F1 of teacher-forced labels, and selection of the best epoch's weights (BestCheckpoint)."""

import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

import scmulan
from scmulan.train import BestCheckpoint, LabelTargets, confusion_counts, fit, label_predictions, macro_f1

FIELDS = {"coarse_cell_type_key": "coarse_cell_type", "cell_type_key": "cell_type"}
RUN = {"batch_size": 32, "train_size": 0.6, "enable_progress_bar": False}
METRICS = {"coarse_cell_type": "validation_coarse_cell_type_macro_f1", "cell_type": "validation_cell_type_macro_f1"}


def new_model(atlas):
    data = atlas.copy()
    scmulan.SCMULAN.setup_anndata(data, **FIELDS)
    torch.manual_seed(0)
    return scmulan.SCMULAN(data, config="tiny")


class Recorder(pl.Callback):
    """Per validation epoch: the weights, and the teacher-forced labels computed here, independently of the plan."""

    def __init__(self, vocab):
        self.fields = {f: np.asarray(vocab.field_ids(f)) for f in METRICS}
        self.field_of = {int(i): f for f, ids in self.fields.items() for i in ids}
        self.labels, self.weights = {}, {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        net = pl_module.net
        with torch.no_grad():
            logits = net.heads(net(batch["ids"], batch["levels"]))[0]
        epoch = self.labels.setdefault(trainer.current_epoch, {f: ([], []) for f in METRICS})
        ids, groups, task = batch["ids"].tolist(), batch["groups"].tolist(), batch["task"].tolist()
        for b in range(len(ids)):
            if task[b] != 1:  # annotation sentences only
                continue
            for t in range(len(ids[b]) - 1):
                field = self.field_of.get(ids[b][t + 1])
                if groups[b][t + 1] > 0 and field is not None:
                    candidates = self.fields[field]
                    best = candidates[int(logits[b, t, candidates].argmax())]
                    epoch[field][0].append(ids[b][t + 1])
                    epoch[field][1].append(int(best))

    def on_validation_end(self, trainer, pl_module):
        state = pl_module.net.state_dict()
        self.weights[trainer.current_epoch] = {k: v.detach().clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def selected(atlas):
    """4 epochs with selection on the fine type's validation macro-F1, recording every epoch."""
    model = new_model(atlas)
    recorder = Recorder(model.vocab)
    model.train(max_epochs=4, select_best=METRICS["cell_type"], callbacks=[recorder], **RUN)
    return model, recorder


def test_logged_macro_f1_is_sklearns_on_the_teacher_forced_labels(selected):
    model, recorder = selected
    assert set(recorder.labels) == {0, 1, 2, 3}
    for field, name in METRICS.items():
        logged = model.history_[name][name]
        assert list(logged.index) == [0, 1, 2, 3]
        for epoch, per_field in recorder.labels.items():
            truth, predicted = per_field[field]
            assert len(truth) >= 20  # the validation annotation sentences of 120 cells
            expected = f1_score(truth, predicted, average="macro")
            assert logged.loc[epoch] == pytest.approx(expected, abs=1e-6), (field, epoch)
    fine = model.history_[METRICS["cell_type"]][METRICS["cell_type"]]
    assert fine.nunique() > 1  # it moves with training


def test_training_ends_with_the_best_epochs_weights(selected):
    model, recorder = selected
    fine = model.history_[METRICS["cell_type"]][METRICS["cell_type"]].to_numpy()
    best = len(fine) - 1 - int(np.argmax(fine[::-1]))  # ties go to the later epoch
    state = model.module.state_dict()
    for key, value in recorder.weights[best].items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


class Scripted(pl.Callback):
    """Logs a given value as ``validation_scripted`` at each validation epoch."""

    def __init__(self, values):
        self.values = values

    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.log("validation_scripted", self.values[trainer.current_epoch])


def test_best_checkpoint_restores_an_earlier_epoch_and_prefers_the_later_of_ties(atlas):
    model = new_model(atlas)
    recorder = Recorder(model.vocab)
    best = BestCheckpoint("validation_scripted")
    model.train(max_epochs=4, callbacks=[Scripted([0.2, 0.9, 0.9, 0.5]), recorder, best], **RUN)
    assert (best.best_epoch, best.best_score, best.restored) == (2, pytest.approx(0.9), True)
    state = model.module.state_dict()
    for key, value in recorder.weights[2].items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    changed = [k for k, v in recorder.weights[3].items() if not torch.equal(state[k], v)]
    assert changed  # the last epoch's weights were replaced


class Crash(RuntimeError):
    pass


class CrashAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            msg = f"simulated crash at step {self.step}"
            raise Crash(msg)


def test_a_resumed_run_selects_as_one_that_never_stopped(atlas, tmp_path):
    values = [0.2, 0.9, 0.5, 0.4]  # best: epoch 1, before the crash in epoch 2
    full, full_best = new_model(atlas), BestCheckpoint("validation_scripted")
    full.train(max_epochs=4, callbacks=[Scripted(values), full_best], **RUN)
    crashed = new_model(atlas)
    callbacks = [Scripted(values), BestCheckpoint("validation_scripted"), CrashAt(15)]
    with pytest.raises(Crash):  # in epoch 2: the run resumes from the end of epoch 1
        crashed.train(max_epochs=4, checkpoint_dir=tmp_path, callbacks=callbacks, **RUN)
    resumed, resumed_best = new_model(atlas), BestCheckpoint("validation_scripted")
    resumed.train(max_epochs=4, checkpoint_dir=tmp_path, callbacks=[Scripted(values), resumed_best], **RUN)
    assert full_best.best_epoch == resumed_best.best_epoch == 1
    expected, got = full.module.state_dict(), resumed.module.state_dict()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_min_mode_and_min_delta():
    cb = BestCheckpoint("validation_loss", mode="min", min_delta=0.1)
    cb.best_score = 1.0
    assert cb._improves(0.85)
    assert not cb._improves(0.95)


def test_selection_state_travels_in_checkpoints():
    cb = BestCheckpoint("validation_scripted")
    cb.best_score, cb.best_epoch, cb._best_state = 0.7, 3, {"w": torch.ones(2)}
    other = BestCheckpoint("validation_scripted")
    other.load_state_dict(cb.state_dict())
    assert (other.best_score, other.best_epoch) == (0.7, 3)
    assert torch.equal(other._best_state["w"], torch.ones(2))
    assert other.state_key == "BestCheckpoint[validation_scripted]"


def test_missing_metric_keeps_the_last_weights_and_says_why(atlas, caplog):
    model = new_model(atlas)
    best = BestCheckpoint("validation_no_such_metric")
    with caplog.at_level(logging.WARNING, logger="scmulan.train._selection"):
        model.train(max_epochs=1, callbacks=[best], **RUN)
    assert not best.restored
    assert "train_size < 1" in caplog.text
    assert "validation_cell_type_macro_f1" in caplog.text  # names what was logged


def test_bad_arguments_name_the_fix(atlas):
    with pytest.raises(ValueError, match="'max' or 'min'"):
        BestCheckpoint(mode="highest")
    with pytest.raises(ValueError, match="min_delta"):
        BestCheckpoint(min_delta=-1)
    with pytest.raises(ValueError, match="train_size < 1"):
        fit(None, None, None, select_best="validation_cell_type_macro_f1")
    model = new_model(atlas)
    with pytest.raises(ValueError, match="train_size < 1"):
        model.train(max_epochs=1, select_best="validation_cell_type_macro_f1", train_size=1.0)


def _labels():
    # vocabulary of 8: 0-2 genes/specials, 3-4 field 0 (coarse), 5-7 field 1 (fine)
    field_of = torch.tensor([-1, -1, -1, 0, 0, 1, 1, 1])
    members = torch.zeros(2, 8, dtype=torch.bool)
    members[0, 3:5] = True
    members[1, 5:8] = True
    prior = torch.log(torch.tensor([1, 1, 1, 0.9, 0.1, 0.8, 0.1, 0.1]))
    return LabelTargets(field_of, members, prior, tau=5.0, fields=("coarse", "fine"))


def test_label_predictions_pick_within_the_field_without_logit_adjustment():
    labels = _labels()
    ids = torch.tensor([[1, 2, 4, 6, 0], [1, 2, 3, 5, 0]])
    groups = torch.tensor([[0, 0, 1, 2, 3], [0, 0, 1, 2, 3]])  # label at positions 2 and 3, <E> at 4
    logits = torch.zeros(2, 5, 8)
    logits[:, :, 0] = 10.0  # a non-label entity scores highest everywhere: never predicted at a label position
    logits[0, 1, 4] = 1.0  # predicts coarse 4 (right; the prior would push it to 3 with tau)
    logits[0, 2, 7] = 1.0  # predicts fine 7 (wrong: 6)
    logits[1, 1, 3] = 1.0
    logits[1, 2, 5] = 1.0
    targets, predicted = label_predictions(logits, ids, groups, labels)
    assert targets.tolist() == [4, 6, 3, 5]
    assert predicted.tolist() == [4, 7, 3, 5]
    targets, predicted = label_predictions(logits, ids, groups, labels, rows=torch.tensor([False, True]))
    assert targets.tolist() == [3, 5]


def test_macro_f1_equals_sklearn_per_field():
    labels = _labels()
    gen = torch.Generator().manual_seed(0)
    coarse_t, coarse_p = torch.randint(3, 5, (40,), generator=gen), torch.randint(3, 5, (40,), generator=gen)
    fine_t = torch.randint(5, 7, (30,), generator=gen)  # category 7 only ever predicted: counts as sklearn counts it
    fine_p = torch.randint(5, 8, (30,), generator=gen)
    counts = confusion_counts(torch.cat([coarse_t, fine_t]), torch.cat([coarse_p, fine_p]), 8)
    f1, occurred = macro_f1(counts, labels.members)
    assert occurred.tolist() == [True, True]
    assert f1[0].item() == pytest.approx(f1_score(coarse_t, coarse_p, average="macro"))
    assert f1[1].item() == pytest.approx(f1_score(fine_t, fine_p, average="macro"))
    f1, occurred = macro_f1(confusion_counts(coarse_t, coarse_p, 8), labels.members)
    assert occurred.tolist() == [True, False]
    assert f1[1].item() == 0.0
