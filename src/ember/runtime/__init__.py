"""Devices, precision and strategies: one device, or DDP/FSDP over ``torch.distributed``."""

from typing import Any

from ember.runtime.base import Strategy
from ember.runtime.factory import resolve_strategy
from ember.runtime.precision import Precision, resolve_precision
from ember.runtime.single_device import SingleDeviceStrategy

_LAZY = {
    "DDPStrategy": "ember.runtime.ddp",
    "FSDPStrategy": "ember.runtime.fsdp",
    "ParallelStrategy": "ember.runtime.parallel",
}


def __getattr__(name: str) -> Any:
    # the distributed strategies load on first use (``import ember`` stays cheap)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ember.runtime' has no attribute {name!r}")


__all__ = [
    "DDPStrategy",
    "FSDPStrategy",
    "ParallelStrategy",
    "Precision",
    "SingleDeviceStrategy",
    "Strategy",
    "resolve_precision",
    "resolve_strategy",
]
