"""``SingleDeviceStrategy``: one process on one device."""

from __future__ import annotations

from typing import Any

import torch

from ember.runtime.base import Strategy


class SingleDeviceStrategy(Strategy):
    """One process, one device."""

    def __init__(self, device: torch.device) -> None:
        self.root_device = device

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move ``module`` to the strategy's device (in place) and return it."""
        return module.to(self.root_device)

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """``tensor`` itself: there is one process."""
        return tensor

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for: there is one process."""
        return None

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` itself: there is one process."""
        return obj
