"""FSDP for the c-sentence transformer: one shard unit per block, full checkpoints, full weights after training.

Lightning's :class:`~lightning.pytorch.strategies.FSDPStrategy` wraps the whole training plan as one FSDP unit
unless given a wrapping policy (every forward then gathers the whole model, which saves no memory), and leaves the
network's parameters as views of each process's shards after ``fit``. :class:`BlockFSDPStrategy` wraps every
transformer block (``scmulan.nn.model.Block``) in its own unit and writes full (single-file) checkpoints;
:func:`full_state_dict` gathers the trained weights on every process. On CPU (gloo), which Lightning refuses for
FSDP, it places the units on the CPU itself: that is how FSDP is tested without a GPU.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor


def _state_dict_context(module: torch.nn.Module, *, offload: bool, rank0_only: bool) -> AbstractContextManager:
    """FSDP's full state-dict context (CPU offload only from an accelerator: it crashes on CPU-resident shards)."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.api import FullOptimStateDictConfig

    return FSDP.state_dict_type(
        module,
        StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
        FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
    )


class BlockFSDPStrategy(FSDPStrategy):
    """:class:`~lightning.pytorch.strategies.FSDPStrategy` with one FSDP unit per transformer block.

    ``strategy="fsdp"`` in :func:`~scmulan.train.fit` (and so in ``SCMULAN.train``) means this strategy with its
    defaults: fully sharded blocks, the embeddings, final norm and heads in the root unit, full-state-dict
    checkpoints (one file, as with DDP, so resuming works the same way).

    Parameters
    ----------
    **kwargs
        :class:`~lightning.pytorch.strategies.FSDPStrategy` arguments, e.g. ``sharding_strategy="SHARD_GRAD_OP"``,
        ``cpu_offload=True`` or another ``auto_wrap_policy``.
    """

    def __init__(self, **kwargs: Any) -> None:
        from scmulan.nn.model import Block

        kwargs.setdefault("auto_wrap_policy", {Block})
        kwargs.setdefault("state_dict_type", "full")
        super().__init__(**kwargs)

    def _on_cpu(self) -> bool:
        return self.root_device.type == "cpu"

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self._on_cpu():
            return super()._setup_model(model)
        from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
        from torch.distributed.fsdp import FullyShardedDataParallel

        # Lightning passes `device_id=None` on CPU, and FSDP then looks for an accelerator; name the CPU instead.
        model = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The full state dict for a checkpoint (on rank 0; CPU shards are not offloaded, which would crash)."""
        if not self._on_cpu() or self._state_dict_type != "full":
            return super().lightning_module_state_dict()
        with _state_dict_context(self.model, offload=False, rank0_only=True):
            return self.model.state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        """The full optimiser state for a checkpoint (on rank 0; as Lightning's, without CPU offload on CPU)."""
        if not self._on_cpu() or self._state_dict_type != "full":
            return super().optimizer_state(optimizer)
        from lightning.pytorch.core.optimizer import LightningOptimizer
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        with _state_dict_context(self.model, offload=False, rank0_only=True):
            state = FSDP.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # the standard (parameter-index) layout, as Lightning stores it
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state


def full_state_dict(strategy: FSDPStrategy) -> dict[str, Tensor]:
    """The full (unsharded) state dict of the strategy's wrapped module, on every process, on the CPU.

    A collective: every process must call it. Keys are those of the unwrapped module (no FSDP prefixes).
    """
    offload = strategy.root_device.type != "cpu"
    with _state_dict_context(strategy.model, offload=offload, rank0_only=False):
        state = strategy.model.state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
