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


#: ``devices`` values that mean every visible GPU (one process on the CPU)
ALL_DEVICES = ("auto", None, -1, "-1")


def parse_devices(accelerator: str, devices: Any) -> tuple[str, list[int]]:
    """The device type and the local device indices asked for: one process per index.

    ``devices`` is a count (``2``, ``"2"``), a list of CUDA indices (``[0, 1]``, ``"0,1"``, ``"1,"``),
    ``-1`` or ``"auto"`` (every GPU; one process on the CPU). On the CPU a count is the number of
    processes. Under torchrun or SLURM the launcher decides how many processes there are; the
    distributed strategies check that an explicit count agrees with it.
    """
    device_type = resolve_accelerator(accelerator)
    available = torch.cuda.device_count() if device_type == "cuda" else None
    if devices in ALL_DEVICES:
        return device_type, (list(range(available)) if available else [0])
    count = _device_count(devices)
    indices = list(range(count)) if count is not None else _listed_indices(devices, device_type)
    if available is not None and max(indices) >= available:
        raise ValueError(f"devices={devices!r} asks for CUDA device {max(indices)}, but {available} are visible")
    return device_type, indices


def _device_count(devices: Any) -> int | None:
    """The count in ``2`` or ``"2"``; None when ``devices`` is not a positive count."""
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    if isinstance(devices, str) and devices.strip().isdigit() and int(devices) >= 1:
        return int(devices)
    return None


def _listed_indices(devices: Any, device_type: str) -> list[int]:
    """The indices in ``[0, 1]`` or ``"0,1"``; on the CPU a list may name one device only (it is device 0)."""
    indices = _index_list(devices)
    if indices is None:
        raise ValueError(
            f"devices={devices!r} is not valid; use a positive count (2), a list of GPU indices ([0, 1] or '0,1'), "
            "-1 or 'auto'"
        )
    if len(set(indices)) != len(indices):
        raise ValueError(f"devices={devices!r} lists a device twice")
    if device_type == "cpu":
        if len(indices) > 1:
            raise ValueError(f"devices={devices!r}: on the CPU give the number of processes (devices=2), not a list")
        return [0]
    return indices


def _index_list(devices: Any) -> list[int] | None:
    """The indices of a list (``[0, 1]``) or a comma-separated string (``"0,1"``, ``"1,"``); None otherwise."""
    if isinstance(devices, str):
        parts = devices.strip().rstrip(",")
        if "," in devices and parts and all(p.strip().isdigit() for p in parts.split(",")):
            return [int(p) for p in parts.split(",")]
        return None
    if (
        isinstance(devices, (list, tuple))
        and devices
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices)
    ):
        return list(devices)
    return None
