"""Numeric precision: autocast for the forward pass, a GradScaler for float16, dtype of 64-true."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ember.tree import tree_map

_ALIASES: dict[Any, str] = {
    "32-true": "32-true",
    "32": "32-true",
    32: "32-true",
    "16-mixed": "16-mixed",
    "16": "16-mixed",
    16: "16-mixed",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
    "64-true": "64-true",
    "64": "64-true",
    64: "64-true",
}
PRECISION_CHOICES = ("32-true", "16-mixed", "bf16-mixed", "64-true", 32, 16, "bf16", 64)


def resolve_precision(value: Any) -> str:
    """Normalise a user's ``precision`` to one of the canonical names, or raise ``ValueError``."""
    if isinstance(value, bool) or value not in _ALIASES:
        raise ValueError(
            f"precision={value!r} is not supported; choose one of {', '.join(map(repr, PRECISION_CHOICES))}"
        )
    return _ALIASES[value]


class Precision:
    """What a precision setting does to a step: an autocast context, a scaler and the input dtype."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = resolve_precision(name)
        self.device = device
        self.autocast_dtype: torch.dtype | None = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(
            self.name
        )
        self.param_dtype: torch.dtype | None = torch.float64 if self.name == "64-true" else None
        self.scaler: torch.amp.GradScaler | None = None
        if self.name == "16-mixed":
            self.scaler = torch.amp.GradScaler(device.type)

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` run under ``torch.autocast`` (the forward pass, ``*_step``); ``fn`` itself when there is
        nothing to do."""
        if self.autocast_dtype is None:
            return fn
        device_type, dtype = self.device.type, self.autocast_dtype

        def autocast_step(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type, dtype=dtype):
                return fn(*args, **kwargs)

        return autocast_step

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` with its floating-point parameters and buffers cast to float64 in place under
        ``"64-true"``; unchanged otherwise (mixed precision autocasts the steps instead)."""
        return module.to(dtype=self.param_dtype) if self.param_dtype is not None else module

    def convert_input(self, batch: Any) -> Any:
        """Cast floating-point tensors of a batch to the parameter dtype (64-true only)."""
        if self.param_dtype is None:
            return batch
        dtype = self.param_dtype
        return apply_to_tensors(batch, lambda t: t.to(dtype) if t.is_floating_point() else t)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``precision`` entry: ``{"scaler": GradScaler.state_dict()}`` under 16-mixed, else ``{}``."""
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the GradScaler from a checkpoint's ``precision`` entry (when both have one)."""
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def apply_to_tensors(data: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor inside nested lists, tuples (named too) and dicts.

    Objects with a ``.to()`` method (e.g. torch_geometric-style batches) are passed to ``fn`` too;
    other leaves are returned as they are.
    """
    return tree_map(lambda leaf: fn(leaf) if _movable(leaf) else _fields_applied(leaf, fn), data)


def _fields_applied(leaf: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """A dataclass instance: a copy with ``fn`` applied to its fields' tensors (as Lightning moves them)."""
    if not dataclasses.is_dataclass(leaf) or isinstance(leaf, type):
        return leaf
    out = copy.copy(leaf)
    for field in dataclasses.fields(leaf):
        object.__setattr__(out, field.name, apply_to_tensors(getattr(leaf, field.name), fn))  # frozen ones too
    return out


def _movable(leaf: Any) -> bool:
    if isinstance(leaf, torch.Tensor):
        return True
    return hasattr(leaf, "to") and callable(leaf.to) and not isinstance(leaf, type)
