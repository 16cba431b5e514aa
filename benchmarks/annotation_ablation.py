"""Which training recipe makes scmulan's annotation good on little data: an ablation, side by side with logreg.

Every variant trains the same network from scratch on the same split of ``pbmc68k`` (80/20 stratified on the fine
labels, 560 training cells) with the tasks ``train()`` picks by default for these fields (generation + annotation),
then annotates the held-out cells from genes only. A variant is a network override (the generation objective: ``"set"``, the seed's, or
``"next"``, the default of the presets) and a set of ``plan_kwargs`` (the objective options of
:meth:`scmulan.SCMULAN.train`); ``legacy`` is the seed's recipe (set objective, BCE over the whole vocabulary at label
positions, plain batch mean over sentences). The logistic regression (CellTypist's recipe, see ``_compare.logreg_fit``) runs on
the same split in the same process.

    python benchmarks/annotation_ablation.py                          # tiny, seed 0, every variant, 30 epochs
    python benchmarks/annotation_ablation.py --config small --epochs 40 --seeds 0 1 --variants legacy default
    python benchmarks/annotation_ablation.py --config small --epochs 40 --seeds 0 --variants default --init-seed 100

Checkpoint selection (``select*`` variants): the model trains on 90 % of the reference and keeps the weights of the
epoch with the best teacher-forced fine macro-F1 on the other 10 % (``scmulan.train.BestCheckpoint`` on
``validation_cell_type_macro_f1``); ``default_val90`` is the same split without selection. ``train()`` now gives
every labelled validation cell an annotation sentence (``scmulan.train.validation_dataset``), so ``select`` scores
all of them; ``select_allval`` was the benchmark's stand-in for that change before it was made and is now the same
run as ``select``. ``--test-curve`` also annotates
the held-out cells with every epoch's weights (kept in memory during training, scored afterwards): an oracle curve
for the analysis of the selection, never used to choose anything.

Scheduled task mixing (``finish_*``, ``ramp``: ``plan_kwargs`` ``task_loss_weights_end`` and ``task_loss_ramp`` of
:class:`scmulan.train.CSentenceTrainingPlan`): annotation's share of the loss grows over the run, generation's never
reaches 0. Every run also reports a generation-quality proxy (:func:`generation_proxy`): the teacher-forced
next-entity and level cross-entropies of the held-out cells' generation sentences, so a recipe that buys annotation
with generation shows it.
"""

from __future__ import annotations

import argparse
import json
import time

import _compare as C
import numpy as np

SEED_RECIPE = {"label_loss": "bce", "task_loss_weights": None}
# name: (network overrides, plan_kwargs, other train() arguments); ({}, {}, {}) is the package's default
VARIANTS: dict[str, tuple[dict, dict, dict]] = {
    "legacy": ({"generation_objective": "set", "dropout": 0.0}, SEED_RECIPE, {}),  # the seed's recipe
    "set_default": ({"generation_objective": "set"}, {}, {}),
    "next_seedlabels": ({}, SEED_RECIPE, {}),  # the new generation objective alone
    "softmax": ({}, {"task_loss_weights": None}, {}),
    "default": ({}, {}, {}),
    "no_dropout": ({"dropout": 0.0}, {}, {}),  # the default before the presets took dropout 0.1
    "default_la1": ({}, {"logit_adjustment": 1.0}, {}),
    "default_v01": ({}, {"value_weight": 0.1}, {}),
    "balanced_equal": ({}, {"task_loss_weights": (1.0, 1.0, 1.0)}, {}),
    "ann2": ({}, {"task_loss_weights": (1.0, 2.0, 1.0)}, {}),
    "ann3": ({}, {"task_loss_weights": (1.0, 3.0, 1.0)}, {}),  # (1, 3, 1) whatever the width (tiny's default)
    "dropout2": ({"dropout": 0.2}, {}, {}),  # twice the presets' dropout
    "wd01": ({}, {"weight_decay": 0.1}, {}),  # ten times the default weight decay
    "lr1e3": ({}, {}, {"lr": 1e-3}),  # a third of the default peak learning rate below width 256 (3e-3)
    "swa_half": ({}, {}, {"average_from": 0.5}),  # the weights averaged over the epochs of the second half
    "gene_bag": ({"gene_bag": True}, {}, {}),  # a linear path from the gene levels to the heads
    "bce_balanced": ({}, {"label_loss": "bce"}, {}),
    "ann_sample3": ({}, {}, {"tasks": ("generation", "annotation"), "task_weights": (1.0, 3.0)}),
    "ann_sample3_loss3": (
        {},
        {"task_loss_weights": (1.0, 3.0, 1.0)},
        {"tasks": ("generation", "annotation"), "task_weights": (1.0, 3.0)},
    ),
    "dropout": ({"dropout": 0.1}, {}, {}),
    "dropout_sample3": ({"dropout": 0.1}, {}, {"tasks": ("generation", "annotation"), "task_weights": (1.0, 3.0)}),
    "gene_dropout": ({}, {}, {"gene_dropout": 0.3}),
    "dropout_genedrop_sample3": (
        {"dropout": 0.1},
        {},
        {"tasks": ("generation", "annotation"), "task_weights": (1.0, 3.0), "gene_dropout": 0.3},
    ),
    "annotation_only": ({}, {}, {"tasks": ("annotation",)}),  # a reference point, not a recipe
    # checkpoint selection on the validation cells' fine macro-F1 (see the module notes)
    "default_val90": ({}, {}, {"train_size": 0.9}),
    "select": ({}, {}, {"train_size": 0.9, "select": "validation_cell_type_macro_f1"}),
    "select_allval": ({}, {}, {"train_size": 0.9, "select": "validation_cell_type_macro_f1"}),  # = select now
    # scheduled task mixing (plan_kwargs task_loss_weights_end / task_loss_ramp): annotation's share grows late
    "finish_third": ({}, {"task_loss_weights_end": (0.1, 1.0, 0.1), "task_loss_ramp": (2 / 3, 2 / 3)}, {}),
    "finish_half": ({}, {"task_loss_weights_end": (0.1, 1.0, 0.1), "task_loss_ramp": (0.5, 0.5)}, {}),
    "finish_third_001": ({}, {"task_loss_weights_end": (0.01, 1.0, 0.01), "task_loss_ramp": (2 / 3, 2 / 3)}, {}),
    "finish_half_001": ({}, {"task_loss_weights_end": (0.01, 1.0, 0.01), "task_loss_ramp": (0.5, 0.5)}, {}),
    "ramp": ({}, {"task_loss_weights_end": (0.1, 1.0, 0.1), "task_loss_ramp": (0.0, 1.0)}, {}),
    "dropout_sample3_finish": (
        {"dropout": 0.1},
        {"task_loss_weights_end": (0.01, 1.0, 0.01), "task_loss_ramp": (2 / 3, 2 / 3)},
        {"tasks": ("generation", "annotation"), "task_weights": (1.0, 3.0)},
    ),
    "ann10": ({}, {"task_loss_weights": (1.0, 10.0, 1.0)}, {}),
    "gen2": ({}, {"task_loss_weights": (2.0, 1.0, 1.0)}, {}),  # generation twice annotation's share
    "ann3_v03": ({}, {"value_weight": 0.3}, {}),
    "smooth01": ({}, {"label_smoothing": 0.1}, {}),  # label smoothing 0.1 at the label positions
}


def run(args) -> dict:
    """Every variant on every seed; returns the per-run scores."""
    import scmulan

    data = C.load_pbmc()
    rows = []
    for seed in args.seeds:
        train_idx, test_idx = C.split(data.obs["cell_type"], seed)
        ref, test = data[train_idx].copy(), data[test_idx].copy()
        truth = {
            lv: test.obs[key].astype(str).to_numpy()
            for lv, key in (("fine", "cell_type"), ("coarse", "coarse_cell_type"))
        }
        X_train, X_test = C.dense(ref.X), C.dense(test.X)
        for lv, key in (("fine", "cell_type"), ("coarse", "coarse_cell_type")):
            y_train = ref.obs[key].astype(str).to_numpy()
            logreg = C.logreg_fit(X_train, y_train, seed=seed)
            for tau in args.prior_correction:  # the peer gets scmulan's decision rule too
                pred = C.prior_corrected_predict(logreg, X_test, y_train, tau)
                label = "logreg" if tau == 0 else f"logreg prior_correction={tau:g}"
                rows.append({"seed": seed, "variant": label, "level": lv, **_scores(truth[lv], pred)})
        for name in args.variants:
            scmulan.SCMULAN.setup_anndata(ref, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
            network, plan, train_kwargs = VARIANTS[name]
            train_kwargs = {"train_size": 1.0, **train_kwargs}
            monitor = train_kwargs.pop("select", None)
            selection = {"callbacks": []}
            average_from = train_kwargs.pop("average_from", None)
            if average_from is not None:
                selection["callbacks"].append(_epoch_average(int(average_from * args.epochs)))
            if monitor is not None:
                from scmulan.train import BestCheckpoint

                selection["callbacks"].append(BestCheckpoint(monitor))
            snapshots = _snapshots() if args.test_curve and train_kwargs["train_size"] < 1 else None
            if snapshots is not None:
                selection["callbacks"].insert(0, snapshots)
            saved = args.model_dir.replace("{variant}", name).replace("{seed}", str(seed)) if args.model_dir else None
            if saved is not None:  # score a model trained before (e.g. by --save-dir): no training
                model, seconds, chosen = scmulan.SCMULAN.load(saved), None, {}
                C.log(f"seed {seed} {name:>13} loaded from {saved}")
            else:
                model = scmulan.SCMULAN(ref, config=args.config, seed=seed + args.init_seed, **network)
                t0 = time.perf_counter()
                model.train(
                    max_epochs=args.epochs,
                    seed=seed + args.init_seed,
                    accelerator="cpu",
                    enable_progress_bar=False,
                    plan_kwargs=plan,
                    **train_kwargs,
                    **selection,
                )
                seconds = time.perf_counter() - t0
                if args.save_dir:  # for compare_generation.py --model-dir: both benchmarks score the same training
                    model.save(args.save_dir.replace("{variant}", name).replace("{seed}", str(seed)), overwrite=True)
                chosen = _selection(model, selection["callbacks"][-1] if monitor is not None else None)
                if snapshots is not None:
                    chosen["test_f1_by_epoch"] = snapshots.test_curve(model, C.without_labels(test), truth)
            proxy = generation_proxy(model, test, seed)
            C.log(f"seed {seed} {name:>13} held-out generation: {proxy}")
            for tau, marginal in ((t, m) for t in args.prior_correction for m in args.decoding):
                out = model.annotate(
                    C.without_labels(test), progress=False, prior_correction=tau, marginal=marginal == "marginal"
                )
                label = name if tau == 0 else f"{name} prior_correction={tau:g}"
                label = label if marginal == "greedy" else f"{label} marginal"
                for lv in ("fine", "coarse"):
                    s = _scores(truth[lv], C.pd_fill(out[lv]))
                    row = {"seed": seed, "variant": label, "level": lv, "seconds": seconds, **s, **chosen, **proxy}
                    rows.append(row)
                    C.log(f"seed {seed} {label:>13} {lv:>6}: macro-F1 {s['macro_f1']:.3f} accuracy {s['accuracy']:.3f}")
    return {"rows": rows}


def _epoch_average(first_epoch: int):
    """Lightning's weight averaging (SWA: equal weights) of the weights at the end of each epoch from ``first_epoch``."""
    from lightning.pytorch.callbacks import WeightAveraging

    class EpochAverage(WeightAveraging):
        def should_update(self, step_idx=None, epoch_idx=None):
            return epoch_idx is not None and epoch_idx >= first_epoch

    return EpochAverage()


def generation_proxy(model, test, seed: int) -> dict:
    """Teacher-forced generation losses of the held-out cells: how well the model still generates.

    The held-out cells' generation sentences (the same sentences for every variant of a split: fixed seed, no
    shuffling) are scored with the trained network: ``gen_entity_ce`` is the mean next-entity cross-entropy per
    sentence (the ``*_entity_loss_generation`` of ``history_``), ``gen_level_ce`` the mean level cross-entropy (set
    objective: the value MSE).
    """
    import torch

    from scmulan.model._training_data import task_spec
    from scmulan.sentence import TASKS, CellSource, TrainingSentenceDataset, forward_heads
    from scmulan.train import set_objective
    from scmulan.train._generation_objective import heads_with_levels, next_entity_objective

    parts = model.parts()
    source = CellSource(
        test, parts.vocab, obs_keys=parts.obs_keys, layer=parts.layer, gene_symbols=parts.gene_symbols_key
    )
    spec = task_spec(parts, ["generation"], None, None, 0.5, 0.0)
    task_ids = {parts.layout.prompt_token(t): parts.vocab.task_id(parts.layout.prompt_token(t)) for t in TASKS}
    ds = TrainingSentenceDataset(
        [source], spec, task_ids, end_id=parts.vocab.end_id, pad_id=parts.vocab.pad_id, batch_size=32,
        layout=parts.layout, shuffle=False, seed=seed, warn_truncation=False,
    )  # fmt: skip
    net = parts.network.eval()
    entity, level = [], []
    with torch.no_grad():
        for batch in ds:
            if net.config.generation_objective == "next":
                logits, _, level_logits = heads_with_levels(net, batch)
                o = next_entity_objective(logits, level_logits, batch["ids"], batch["levels"], batch["groups"])
            else:
                logits, values = forward_heads(net, batch)
                o = set_objective(logits, values, batch["ids"], batch["levels"], batch["groups"])
            entity.append(o.per_sentence_entity.float())
            level.append(o.per_sentence_value.float())
    return {
        "gen_entity_ce": round(float(torch.cat(entity).nanmean()), 4),
        "gen_level_ce": round(float(torch.cat(level).nanmean()), 4),
    }


def _selection(model, callback) -> dict:
    """The validation macro-F1 per epoch (when logged) and the epoch whose weights were kept."""
    curves = {}
    for lv, key in (("fine", "validation_cell_type_macro_f1"), ("coarse", "validation_coarse_cell_type_macro_f1")):
        curves[f"validation_{lv}_f1"] = model.history_[key][key].round(4).tolist() if key in model.history_ else None
    if callback is None:
        return curves
    C.log(f"kept epoch {callback.best_epoch} (validation fine macro-F1 {callback.best_score:.3f})")
    return {**curves, "kept_epoch": callback.best_epoch, "kept_validation_f1": callback.best_score}


def _snapshots():
    """A callback keeping a CPU copy of the network's weights at every validation epoch (for ``--test-curve``)."""
    import lightning.pytorch as pl

    class Snapshots(pl.Callback):
        def __init__(self):
            self.states = {}

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                state = pl_module.net.state_dict()
                self.states[trainer.current_epoch] = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

        def test_curve(self, model, test, truth) -> dict:
            """Held-out macro-F1 of every epoch's weights (the model keeps the weights it ended with)."""
            kept = {k: v.clone() for k, v in model.module.state_dict().items()}
            curve = {"fine": [], "coarse": []}
            for epoch in sorted(self.states):
                model.module.load_state_dict(self.states[epoch])
                out = model.annotate(test, progress=False)
                for lv in curve:
                    curve[lv].append(round(_scores(truth[lv], C.pd_fill(out[lv]))["macro_f1"], 4))
            model.module.load_state_dict(kept)
            C.log(f"test fine macro-F1 by epoch {curve['fine']}")
            return curve

    return Snapshots()


def _scores(truth, pred) -> dict:
    s = C.classification_scores(truth, pred)
    return {"macro_f1": s["macro_f1"], "accuracy": s["accuracy"], "cd34_f1": s["per_class_f1"].get("CD34+")}


def table(rows: list[dict]) -> str:
    """Mean ± s.d. over seeds of fine and coarse macro-F1 per variant."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        cells = [name]
        for lv in ("fine", "coarse"):
            v = [r["macro_f1"] for r in rows if r["variant"] == name and r["level"] == lv]
            cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        cd34 = [
            r["cd34_f1"] for r in rows if r["variant"] == name and r["level"] == "fine" and r["cd34_f1"] is not None
        ]
        cells.append(f"{np.mean(cd34):.2f}" if cd34 else "–")
        for key in ("gen_entity_ce", "gen_level_ce"):
            v = [r[key] for r in rows if r["variant"] == name and r["level"] == "fine" and r.get(key) is not None]
            cells.append(" / ".join(f"{x:.3f}" for x in v) if v else "–")
        out.append(cells)
    header = ["variant", "fine macro-F1", "coarse macro-F1", "CD34+ F1", "gen. entity CE", "gen. level CE"]
    return C.markdown_table(header, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--init-seed",
        type=int,
        default=0,
        help="added to the split seed for the network's initial weights and the training order, the split kept "
        "(default: %(default)s, the split seed itself): the spread of one recipe on one split",
    )
    parser.add_argument("--test-curve", action="store_true", help="score the held-out cells at every epoch")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--prior-correction",
        type=float,
        nargs="+",
        default=[0.0],
        help="annotate with each of these annotate(prior_correction=...) values, and decide the logistic "
        "regression's labels by the same rule (one row each; default: 0)",
    )
    parser.add_argument(
        "--decoding",
        nargs="+",
        default=["greedy"],
        choices=["greedy", "marginal"],
        help="annotate with each of these decodings: coarse then fine ('greedy'), or the fine type summed over the "
        "coarse types (annotate(marginal=True)); one row each",
    )
    parser.add_argument(
        "--model-dir",
        default=None,
        help="load the models from this folder ('{variant}', '{seed}' replaced) instead of training them",
    )
    parser.add_argument(
        "--save-dir",
        default=None,
        help="save each trained model to this folder ('{variant}', '{seed}' replaced), e.g. for "
        "compare_generation.py --model-dir",
    )
    args = parser.parse_args()
    C.setup_runtime(args.threads)
    started = time.perf_counter()
    results = run(args)
    print(table(results["rows"]))
    path = C.write_report("annotation_ablation", args, results, started, out=args.out)
    print(json.dumps({"report": str(path)}))


if __name__ == "__main__":
    main()
