"""``resolve_strategy``: the Strategy for the Trainer's ``strategy``, ``accelerator``, ``devices``,
``num_nodes`` and ``sync_batchnorm`` arguments."""

from __future__ import annotations

from typing import Any

import torch

from ember.runtime.accelerator import parse_devices
from ember.runtime.base import Strategy
from ember.runtime.single_device import SingleDeviceStrategy

STRATEGY_CHOICES = ("auto", "single_device", "ddp", "ddp_spawn", "fsdp")


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
    from ember.distributed.cluster import detect_cluster

    _check_num_nodes(num_nodes)
    _check_sync_batchnorm(sync_batchnorm)
    device_type, indices = parse_devices(accelerator, devices)
    cluster = detect_cluster()
    name = _strategy_name(strategy)
    several = _several_processes(devices, indices, num_nodes, cluster)
    if name == "auto":
        name = "ddp" if several else "single_device"
    if name == "single_device" or (name is None and not hasattr(strategy, "configure")):
        _check_one_process(strategy, several, sync_batchnorm)
        return strategy if name is None else _single_device(device_type, indices)
    if name is not None:
        strategy = _distributed_strategy(name)
    strategy.configure(device_type, indices, devices, num_nodes, sync_batchnorm, cluster)
    return strategy


def _check_num_nodes(num_nodes: Any) -> None:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"num_nodes={num_nodes!r} must be an integer >= 1")


def _check_sync_batchnorm(sync_batchnorm: Any) -> None:
    if not isinstance(sync_batchnorm, bool):
        raise TypeError(f"sync_batchnorm must be True or False, got {sync_batchnorm!r}")


def _strategy_name(strategy: Any) -> str | None:
    """The name of a strategy given by name; None for a Strategy object."""
    if isinstance(strategy, Strategy):
        return None
    if isinstance(strategy, str) and strategy in STRATEGY_CHOICES:
        return strategy
    raise ValueError(
        f"strategy={strategy!r} is not supported; choose one of {STRATEGY_CHOICES} or pass a Strategy object"
    )


def _several_processes(devices: Any, indices: list[int], num_nodes: int, cluster: Any) -> str | None:
    """What asks for more than one process (for the error message), or None when one process is asked for."""
    if len(indices) > 1:
        return f"devices={devices!r}"
    if num_nodes > 1:
        return f"num_nodes={num_nodes!r}"
    if cluster is not None and cluster.world_size > 1:
        return f"WORLD_SIZE={cluster.world_size} (set by the launcher)"
    return None


def _check_one_process(strategy: Any, several: str | None, sync_batchnorm: bool) -> None:
    if several:
        raise ValueError(
            f"{several} needs a distributed strategy, but strategy={strategy!r} runs one process; "
            "use strategy='ddp', 'ddp_spawn' or 'fsdp'"
        )
    if sync_batchnorm:
        raise ValueError("sync_batchnorm=True needs a distributed strategy (strategy='ddp' or 'fsdp')")


def _single_device(device_type: str, indices: list[int]) -> SingleDeviceStrategy:
    index = indices[0] if indices else 0
    return SingleDeviceStrategy(torch.device("cpu") if device_type == "cpu" else torch.device("cuda", index))


def _distributed_strategy(name: str) -> Strategy:
    """A distributed strategy by name, imported on first use."""
    if name == "fsdp":
        from ember.runtime.fsdp import FSDPStrategy

        return FSDPStrategy()
    from ember.runtime.ddp import DDPStrategy

    return DDPStrategy(start_method="spawn" if name == "ddp_spawn" else "popen")
