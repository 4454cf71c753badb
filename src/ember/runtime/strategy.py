"""How a run is spread over processes and devices. ``SingleDeviceStrategy`` is the only one so far;
a distributed strategy implements the same methods (wrapping the module, reducing values,
barriers, and deciding which rank writes files)."""

from __future__ import annotations

from typing import Any

import torch

STRATEGY_CHOICES = ("auto", "single_device")


class Strategy:
    """The seam between the Trainer and the devices/processes it runs on."""

    root_device: torch.device
    global_rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        raise NotImplementedError

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def barrier(self, name: str | None = None) -> None:
        raise NotImplementedError

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        raise NotImplementedError


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


def resolve_strategy(strategy: Any, num_nodes: int, device: torch.device) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in STRATEGY_CHOICES:
        raise ValueError(
            f"strategy={strategy!r} is not supported yet; choose one of {STRATEGY_CHOICES} or pass a Strategy object"
        )
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes != 1:
        raise ValueError(f"num_nodes={num_nodes!r}: only 1 is supported until distributed strategies land")
    return SingleDeviceStrategy(device)
