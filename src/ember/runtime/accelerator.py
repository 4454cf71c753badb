"""Choosing the device type and the devices from ``accelerator`` and ``devices``."""

from __future__ import annotations

from typing import Any

import torch

ACCELERATOR_CHOICES = ("auto", "cpu", "gpu", "cuda")


def resolve_accelerator(accelerator: str) -> str:
    """``"cpu"`` or ``"cuda"`` for the user's ``accelerator``."""
    if accelerator not in ACCELERATOR_CHOICES:
        raise ValueError(f"accelerator={accelerator!r} is not supported; choose one of {ACCELERATOR_CHOICES}")
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"accelerator={accelerator!r} but no CUDA device is available; use accelerator='cpu' or 'auto'"
        )
    return "cpu" if accelerator == "cpu" else "cuda"


def parse_devices(accelerator: str, devices: Any) -> tuple[str, list[int]]:
    """The device type and the local device indices asked for: one process per index.

    ``devices`` is a count (``2``, ``"2"``), a list of CUDA indices (``[0, 1]``, ``"0,1"``, ``"1,"``),
    ``-1`` or ``"auto"`` (every GPU; one process on the CPU). On the CPU a count is the number of
    processes. Under torchrun or SLURM the launcher decides how many processes there are; the
    distributed strategies check that an explicit count agrees with it.
    """
    device_type = resolve_accelerator(accelerator)
    available = torch.cuda.device_count() if device_type == "cuda" else None
    if devices == "auto" or devices is None:
        return device_type, (list(range(available)) if available else [0])
    if devices in (-1, "-1"):
        return device_type, (list(range(available)) if available else [0])
    indices: list[int] | None = None  # None: not understood
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        indices = list(range(devices))
    elif isinstance(devices, str) and devices.strip().isdigit() and int(devices) >= 1:
        indices = list(range(int(devices)))
    elif (
        isinstance(devices, str)
        and devices.strip().rstrip(",")
        and all(p.strip().isdigit() for p in devices.strip().rstrip(",").split(","))
        and "," in devices
    ):
        indices = [int(p) for p in devices.strip().rstrip(",").split(",")]
        if device_type == "cpu" and len(indices) == 1:
            indices = [0]
    elif (
        isinstance(devices, (list, tuple))
        and devices
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices)
    ):
        indices = list(devices)
        if device_type == "cpu" and len(indices) == 1:
            indices = [0]
    if indices is None:
        raise ValueError(
            f"devices={devices!r} is not valid; use a positive count (2), a list of GPU indices ([0, 1] or '0,1'), "
            "-1 or 'auto'"
        )
    if len(set(indices)) != len(indices):
        raise ValueError(f"devices={devices!r} lists a device twice")
    if (
        device_type == "cpu"
        and isinstance(devices, (list, tuple, str))
        and not (isinstance(devices, str) and devices.strip().isdigit())
        and len(indices) > 1
    ):
        raise ValueError(f"devices={devices!r}: on the CPU give the number of processes (devices=2), not a list")
    if available is not None and max(indices) >= available:
        raise ValueError(f"devices={devices!r} asks for CUDA device {max(indices)}, but {available} are visible")
    return device_type, indices


def resolve_device(accelerator: str, devices: Any) -> torch.device:
    """The one device of a single-process run (the first of ``devices``)."""
    device_type, indices = parse_devices(accelerator, devices)
    if device_type == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", indices[0] if indices else 0)
