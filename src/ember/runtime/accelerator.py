"""Choosing the device from ``accelerator`` and ``devices``."""

from __future__ import annotations

from typing import Any

import torch

ACCELERATOR_CHOICES = ("auto", "cpu", "gpu", "cuda")


def resolve_device(accelerator: str, devices: Any) -> torch.device:
    """The single device a run uses; multi-device values raise until a distributed strategy exists."""
    if accelerator not in ACCELERATOR_CHOICES:
        raise ValueError(f"accelerator={accelerator!r} is not supported; choose one of {ACCELERATOR_CHOICES}")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"accelerator={accelerator!r} but no CUDA device is available; use accelerator='cpu' or 'auto'")
    index = _device_index(devices)
    if accelerator == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", index)


def _device_index(devices: Any) -> int:
    if devices in ("auto", 1, "1", -1, "-1"):
        return 0
    if isinstance(devices, (list, tuple)) and len(devices) == 1 and isinstance(devices[0], int):
        return devices[0]
    if isinstance(devices, str) and devices.rstrip(",").isdigit() and devices.endswith(","):
        return int(devices.rstrip(","))
    raise ValueError(
        f"devices={devices!r} asks for more than one device; this version of Ember trains on one device "
        "(use devices=1, 'auto', or [index]); multi-device training comes with the distributed strategies"
    )
