"""How a run is spread over processes and devices: the ``Strategy`` seam and ``resolve_strategy``.

``SingleDeviceStrategy`` runs one process on one device. The distributed strategies
(:class:`~ember.runtime.ddp.DDPStrategy`, :class:`~ember.runtime.fsdp.FSDPStrategy`) implement the
same methods on ``torch.distributed``: joining or starting the processes, wrapping the module,
reducing values, barriers, and how checkpoints are gathered, written and read. They are imported
only when asked for, and import FSDP, DTensor and distributed checkpointing (with sympy) only when
they use them: ``import ember`` and choosing a strategy load none of these. (torch.optim itself
imports the dynamo compiler, and with it FSDP and sympy, when a process builds its first optimizer.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from ember.runtime.accelerator import parse_devices

STRATEGY_CHOICES = ("auto", "single_device", "ddp", "ddp_spawn", "fsdp")


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
        return self.global_rank == 0

    @property
    def launcher(self) -> Any:
        """What starts this run's other processes, or None when there is nothing to start."""
        return None

    def setup_environment(self) -> None:
        """Join (or create) the process group; called at the start of every stage."""

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        raise NotImplementedError

    def training_step_fn(self, module: Any) -> Callable:
        """What the training loop calls for ``training_step(batch, batch_idx)``."""
        return module.training_step

    def no_sync(self) -> Callable[[], Any] | None:
        """A factory of the context that skips gradient synchronisation on accumulation micro-steps,
        or None when there is nothing to skip."""
        return None

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def barrier(self, name: str | None = None) -> None:
        raise NotImplementedError

    def broadcast(self, obj: Any, src: int = 0) -> Any:
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
        module.load_state_dict(state)

    def optimizer_state_dict(self, module: torch.nn.Module, optimizer: Any, sharded: bool = False) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(
        self, module: torch.nn.Module, optimizer: Any, state: dict[str, Any], index: int = 0
    ) -> None:
        optimizer.load_state_dict(state)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
        """Write ``checkpoint`` (every rank calls this; rank zero writes a single file)."""
        from ember.checkpoint import save_checkpoint

        if self.is_global_zero:
            save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
        from ember.checkpoint import load_checkpoint

        if os.path.isdir(path):
            raise ValueError(
                f"{os.fspath(path)!r} is a directory: a sharded checkpoint, which only "
                "FSDPStrategy(trusted_sharded_checkpoints=True) loads"
            )
        return load_checkpoint(path, map_location=map_location)

    def restored(self) -> None:
        """The checkpoint being restored is fully read (model, then optimizers)."""


class SingleDeviceStrategy(Strategy):
    """One process, one device."""

    def __init__(self, device: torch.device) -> None:
        self.root_device = device

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.root_device)

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return tensor

    def barrier(self, name: str | None = None) -> None:
        return None

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj


def resolve_strategy(
    strategy: Any,
    accelerator: str = "auto",
    devices: Any = "auto",
    num_nodes: int = 1,
    sync_batchnorm: bool = False,
) -> Strategy:
    """The Strategy for the Trainer's ``strategy``, ``accelerator``, ``devices``, ``num_nodes`` and
    ``sync_batchnorm`` arguments. ``"auto"`` is DDP when more than one process is asked for or a
    launcher (torchrun, SLURM) started several, else one device."""
    from ember.runtime.launcher import detect_cluster

    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"num_nodes={num_nodes!r} must be an integer >= 1")
    if not isinstance(sync_batchnorm, bool):
        raise TypeError(f"sync_batchnorm must be True or False, got {sync_batchnorm!r}")
    device_type, indices = parse_devices(accelerator, devices)
    cluster = detect_cluster()
    if isinstance(strategy, Strategy):
        name = None
    elif isinstance(strategy, str) and strategy in STRATEGY_CHOICES:
        name = strategy
    else:
        raise ValueError(
            f"strategy={strategy!r} is not supported; choose one of {STRATEGY_CHOICES} or pass a Strategy object"
        )
    many = (
        (indices is not None and len(indices) > 1) or num_nodes > 1 or (cluster is not None and cluster.world_size > 1)
    )
    if name == "auto":
        name = "ddp" if many else "single_device"
    if name == "single_device" or (name is None and not hasattr(strategy, "configure")):
        if many:
            asked = (
                f"devices={devices!r}"
                if indices is not None and len(indices) > 1
                else (
                    f"num_nodes={num_nodes!r}"
                    if num_nodes > 1
                    else f"WORLD_SIZE={cluster.world_size} (set by the launcher)"
                )
            )
            raise ValueError(
                f"{asked} needs a distributed strategy, but strategy={strategy!r} runs one process; "
                "use strategy='ddp', 'ddp_spawn' or 'fsdp'"
            )
        if sync_batchnorm:
            raise ValueError("sync_batchnorm=True needs a distributed strategy (strategy='ddp' or 'fsdp')")
        if name is None:
            return strategy
        index = indices[0] if indices else 0
        return SingleDeviceStrategy(torch.device("cpu") if device_type == "cpu" else torch.device("cuda", index))
    if name == "ddp" or name == "ddp_spawn":
        from ember.runtime.ddp import DDPStrategy

        strategy = DDPStrategy(start_method="spawn" if name == "ddp_spawn" else "popen")
    elif name == "fsdp":
        from ember.runtime.fsdp import FSDPStrategy

        strategy = FSDPStrategy()
    strategy.configure(device_type, indices, devices, num_nodes, sync_batchnorm, cluster)
    return strategy
