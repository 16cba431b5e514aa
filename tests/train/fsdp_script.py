"""Worker of ``test_distributed.py``: ``python fsdp_script.py DATA OUT MAX_NORM [CRASH_STEP]`` trains with FSDP.

``strategy="fsdp"``; Lightning starts the second process itself (as for ``"ddp"``); each process writes what the
test checks. With ``CRASH_STEP``, the run stops with an exception after that optimiser step (a killed job).
"""

import json
import os
import sys
import warnings

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from anndata import read_h5ad

import scmulan

FIELDS = {"organ_key": "organ", "coarse_cell_type_key": "coarse_cell_type", "cell_type_key": "cell_type"}


def global_norm(module) -> float:
    """The gradient norm over all processes' shards."""
    local = sum(float(p.grad.double().pow(2).sum()) for p in module.parameters() if p.grad is not None)
    total = torch.tensor(local, dtype=torch.float64)
    dist.all_reduce(total)
    return float(total.sqrt())


class Crash(RuntimeError):
    pass


class CrashAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            msg = f"simulated crash at step {self.step}"
            raise Crash(msg)


class Recorder(pl.Callback):
    """FSDP units, and the global gradient norm before clipping and as the optimiser step used it."""

    def __init__(self):
        self.units, self.before, self.after = 0, [], []

    def on_train_start(self, trainer, pl_module):
        from torch.distributed.fsdp import FullyShardedDataParallel

        self.units = sum(isinstance(m, FullyShardedDataParallel) for m in trainer.strategy.model.modules())
        for opt in trainer.optimizers:
            opt.register_step_post_hook(lambda *_: self.after.append(global_norm(pl_module.net)))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append(global_norm(pl_module.net))


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    data_path, out, max_norm = sys.argv[1], sys.argv[2], float(sys.argv[3])
    crash = [CrashAt(int(sys.argv[4]))] if len(sys.argv) > 4 else []
    data = read_h5ad(data_path)
    scmulan.SCMULAN.setup_anndata(data, **FIELDS)
    model = scmulan.SCMULAN(data, config="tiny", seed=0, dropout=0.1)
    recorder = Recorder()
    try:
        model.train(
            max_epochs=2,
            batch_size=16,
            train_size=0.8,  # and 32 validation cells
            accelerator="cpu",
            devices=2,
            strategy="fsdp",
            gradient_clip_val=max_norm,
            checkpoint_dir=os.path.join(out, "run"),
            enable_progress_bar=False,
            checkpoint_every_n_steps=3,
            callbacks=[recorder, *crash],
        )
    except Crash:
        sys.exit(0)
    rank = dist.get_rank()
    torch.save(model.module.state_dict(), os.path.join(out, f"weights{rank}.pt"))
    with open(os.path.join(out, f"record{rank}.json"), "w") as f:
        record = {"units": recorder.units, "before": recorder.before, "after": recorder.after}
        record["validation_loss"] = model.history_["validation_loss"].iloc[:, 0].tolist()
        json.dump(record, f)
    if rank == 0:
        model.save(os.path.join(out, "model"))
    # Lightning's launcher does not wait for rank 1: without this barrier rank 0 (the command the test runs) can exit
    # before rank 1 has written its weights, and the test finds no weights1.pt on a loaded machine.
    dist.barrier()
