"""How a run is spread over processes and devices: the ``Strategy`` seam that every strategy implements.

:class:`~ember.runtime.single_device.SingleDeviceStrategy` runs one process on one device. The
distributed strategies (:class:`~ember.runtime.ddp.DDPStrategy`, :class:`~ember.runtime.fsdp.FSDPStrategy`)
implement the same methods on ``torch.distributed``: joining or starting the processes, wrapping the
module, reducing values, barriers, and how checkpoints are gathered, written and read. They are imported
only when asked for, and import FSDP, DTensor and distributed checkpointing (with sympy) only when
they use them: ``import ember`` and choosing a strategy load none of these. (torch.optim itself
imports the dynamo compiler, and with it FSDP and sympy, when a process builds its first optimizer.)
:func:`~ember.runtime.factory.resolve_strategy` picks the strategy for the Trainer's arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch


class Strategy:
    """The seam between the Trainer and the devices/processes it runs on.

    The Trainer calls, per stage: ``launcher`` (start processes, once), ``setup_environment``
    (join the process group), ``setup_module`` (move, convert), ``training_step_fn`` (what the
    training loop calls in place of ``module.training_step``), ``no_sync`` (gradient accumulation),
    the checkpoint methods, and ``reduce``/``barrier``/``broadcast`` wherever processes must agree.
    """

    root_device: torch.device
    global_rank: int = 0
    local_rank: int = 0
    node_rank: int = 0
    world_size: int = 1
    #: whether every process must take part in building a checkpoint (FSDP gathers the weights)
    collective_state_dict: bool = False

    @property
    def is_global_zero(self) -> bool:
        """Whether this is the process of global rank zero (the one that logs and writes files)."""
        return self.global_rank == 0

    @property
    def launcher(self) -> Any:
        """What starts this run's other processes, or None when there is nothing to start."""
        return None

    def setup_environment(self) -> None:
        """Join (or create) the process group; called at the start of every stage."""

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Prepare ``module`` for this strategy, in place: move it to ``root_device`` (distributed: and
        convert or shard it). Called at every stage after ``configure_model`` and the precision's dtype
        conversion, before a checkpoint is loaded. Returns the module."""
        raise NotImplementedError

    def training_step_fn(self, module: Any) -> Callable:
        """What the training loop calls for ``training_step(batch, batch_idx)``."""
        return module.training_step

    def no_sync(self) -> Callable[[], Any] | None:
        """A factory of the context that skips gradient synchronisation on accumulation micro-steps,
        or None when there is nothing to skip."""
        return None

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """``tensor`` reduced over all processes with ``op`` (``"mean"``, ``"sum"``, ``"max"`` or ``"min"``);
        every process must call it. One process: ``tensor`` itself."""
        raise NotImplementedError

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process has reached this call (``name`` only labels it). One process: returns at once."""
        raise NotImplementedError

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Process ``src``'s ``obj`` (a tensor or any picklable object) on every process; every process
        must call it. One process: ``obj`` itself."""
        raise NotImplementedError

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """``decision`` agreed by all processes: true if it is true everywhere (``all=True``) or anywhere."""
        return decision

    def on_exception(self, exception: BaseException) -> None:
        """Called with any exception that leaves a stage, before it propagates."""

    # ------------------------------------------------------------------ checkpoints

    #: whether ``trainer.save_checkpoint`` writes a sharded checkpoint (a directory, one part per rank)
    saves_sharded: bool = False

    def model_state_dict(self, module: torch.nn.Module, sharded: bool = False) -> dict[str, Any]:
        """The weights to checkpoint (every rank calls this; what rank zero gets is written)."""
        return module.state_dict()

    def load_model_state_dict(self, module: torch.nn.Module, state: dict[str, Any]) -> None:
        """Load checkpointed weights (as :meth:`model_state_dict` produced them) into ``module``, strictly."""
        module.load_state_dict(state)

    def optimizer_state_dict(self, module: torch.nn.Module, optimizer: Any, sharded: bool = False) -> dict[str, Any]:
        """``optimizer``'s state to checkpoint (every rank calls this; what rank zero gets is written)."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(
        self, module: torch.nn.Module, optimizer: Any, state: dict[str, Any], index: int = 0
    ) -> None:
        """Load a checkpointed optimizer state into ``optimizer``, the ``index``-th of ``configure_optimizers``
        (called on resume, after ``configure_optimizers``)."""
        optimizer.load_state_dict(state)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
        """Write ``checkpoint`` (every rank calls this; rank zero writes a single file)."""
        from ember.checkpoint import save_checkpoint

        if self.is_global_zero:
            save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
        """Read and validate the checkpoint file at ``path`` (every rank reads it; weights only, no code
        runs), tensors mapped with ``map_location``. A directory (sharded checkpoint) raises ``ValueError``."""
        from ember.checkpoint import load_checkpoint

        if os.path.isdir(path):
            raise ValueError(
                f"{os.fspath(path)!r} is a directory: a sharded checkpoint, which only "
                "FSDPStrategy(trusted_sharded_checkpoints=True) loads"
            )
        return load_checkpoint(path, map_location=map_location)

    def restored(self) -> None:
        """The checkpoint being restored is fully read (model, then optimizers)."""
