"""Example inputs for exports: the default sample, a dynamic batch axis, and what a server needs to know.

An input sample may be a tensor, a tuple/list of positional arguments, or a dict of keyword
arguments. Dimension 0 of every tensor in it is the batch axis. Exports run in eval mode on the
module's device; :func:`eval_mode` restores each submodule's train/eval flag afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ember.runtime.precision import apply_to_tensors
from ember.tree import tree_any, tree_map

#: Name of the JSON metadata Ember stores inside ``.pt2`` and TorchScript archives.
METADATA_FILE = "ember.json"


def resolve_input_sample(module: nn.Module, input_sample: Any, argument: str = "input_sample") -> Any:
    """``input_sample``, or the module's ``example_input_array`` when it is None; else a clear error."""
    if input_sample is None:
        input_sample = getattr(module, "example_input_array", None)
    if input_sample is None:
        raise ValueError(
            f"{argument} is required: {type(module).__name__} has no example_input_array. Pass {argument}= "
            f"(e.g. torch.zeros(1, 3, 32, 32)) or set self.example_input_array in __init__"
        )
    if not tree_any(lambda leaf: isinstance(leaf, torch.Tensor), input_sample):
        raise TypeError(
            f"{argument} must be a tensor, a tuple/list of arguments or a dict of keyword arguments "
            f"containing at least one tensor; got {type(input_sample).__name__}"
        )
    return input_sample


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for a module without state)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def to_module_device(module: nn.Module, sample: Any) -> Any:
    """``sample`` with every tensor moved to the module's device.

    A tensor on the ``meta`` device (an ``example_input_array`` made while the module was built on
    ``meta``, as checkpoint loading does) has a shape but no values: it becomes zeros of that shape.
    """
    device = module_device(module)

    def move(t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(t.shape, dtype=t.dtype, device=device) if t.is_meta else t.to(device)

    return apply_to_tensors(sample, move)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put the module in eval mode for the export, then restore every submodule's own flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def split_args(sample: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments for ``module(*args, **kwargs)``."""
    if isinstance(sample, dict):
        return (), dict(sample)
    if isinstance(sample, (tuple, list)):
        return tuple(sample), {}
    return (sample,), {}


def expand_batch(value: Any, size: int = 2) -> Any:
    """Repeat batch-1 tensors to ``size`` rows: ``torch.export`` specialises a batch of 1 to a constant."""

    def expand(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor) and leaf.dim() >= 1 and leaf.shape[0] == 1:
            return leaf.repeat(size, *([1] * (leaf.dim() - 1)))
        return leaf

    return tree_map(expand, value)


def batch_dynamic_shapes(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``dynamic_shapes`` marking dimension 0 of every tensor argument as one shared ``batch`` axis."""
    batch = torch.export.Dim("batch")
    bound = inspect.signature(module.forward).bind(*args, **kwargs)

    def spec(leaf: Any) -> Any:
        return {0: batch} if isinstance(leaf, torch.Tensor) and leaf.dim() >= 1 else None

    return {name: tree_map(spec, value) for name, value in bound.arguments.items()}


def describe_inputs(args: tuple[Any, ...], kwargs: dict[str, Any], dynamic_batch: bool) -> dict[str, Any] | None:
    """Per-sample shape and dtype of a single-tensor input (what ``ember serve`` validates against).

    None when the model takes several inputs or a non-tensor one.
    """
    if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor) or args[0].dim() == 0:
        return None
    x = args[0]
    return {
        "shape": list(x.shape[1:]),
        "dtype": str(x.dtype).removeprefix("torch."),
        "batch": None if dynamic_batch else int(x.shape[0]),
    }
