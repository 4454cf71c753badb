"""Devices, precision and the strategy seam (single device now; distributed strategies plug in here)."""

from ember.runtime.accelerator import resolve_device
from ember.runtime.precision import Precision, resolve_precision
from ember.runtime.strategy import SingleDeviceStrategy, Strategy, resolve_strategy

__all__ = ["Precision", "SingleDeviceStrategy", "Strategy", "resolve_device", "resolve_precision", "resolve_strategy"]
