"""What a served model expects and returns: per-sample shapes and dtypes, and the output tree helpers.

Outputs are a tree of numpy arrays (an array, a tuple/list of them, or a dict of them), every leaf
batched along axis 0. The helpers here slice, join and describe such trees (walked with :mod:`ember.tree`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from ember.tree import tree_leaves, tree_map

Outputs: TypeAlias = "np.ndarray | tuple[Any, ...] | list[Any] | dict[str, Any]"


@dataclass(frozen=True)
class TensorSpec:
    """The shape of one sample (without the batch axis; ``None`` = any size) and its dtype.

    ``batch`` is a batch size the model was exported with and requires, or ``None`` for any.
    """

    shape: tuple[int | None, ...]
    dtype: np.dtype
    batch: int | None = None

    @property
    def complete(self) -> bool:
        """Every dimension is known, so a request that matches cannot make the model fail."""
        return all(d is not None for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"shape": [self.batch, *self.shape], "dtype": self.dtype.name}

    def describe(self) -> str:
        sample = _fmt(self.shape)
        batch = _fmt(("n", *self.shape))
        return f"one sample of shape {sample} or a batch of shape {batch}, dtype {self.dtype.name}"


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"


def spec_of(array: Any, batch: int | None = None) -> TensorSpec:
    """The per-sample spec of a batched array or tensor (anything with ``shape`` and ``dtype``)."""
    return TensorSpec(tuple(int(d) for d in array.shape[1:]), numpy_dtype(array.dtype), batch)


def numpy_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype for a numpy or torch dtype (torch dtypes without a numpy twin raise ``ValueError``)."""
    if isinstance(dtype, np.dtype):
        return dtype
    import torch

    if isinstance(dtype, torch.dtype):
        try:
            return torch.empty(0, dtype=dtype).numpy().dtype
        except TypeError as err:
            raise ValueError(f"cannot serve inputs of dtype {dtype}: it has no numpy equivalent") from err
    return np.dtype(dtype)


def check_batched(tree: Any, size: int) -> None:
    """Raise ``ValueError`` unless every leaf is an array whose axis 0 has ``size`` rows."""
    for leaf in tree_leaves(tree):
        if not isinstance(leaf, np.ndarray) or leaf.ndim == 0 or leaf.shape[0] != size:
            shape = getattr(leaf, "shape", type(leaf).__name__)
            raise ValueError(f"the model returned {shape} for a batch of {size}; every output needs a batch axis")


def concat(trees: Sequence[Any]) -> Any:
    """Join output trees of the same structure along axis 0."""
    first = trees[0]
    if len(trees) == 1:
        return first
    if isinstance(first, dict):
        return {k: concat([t[k] for t in trees]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(concat([t[i] for t in trees]) for i in range(len(first)))
    return np.concatenate(trees)


def take(tree: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every leaf."""
    return tree_map(lambda a: a[start:stop], tree)


def output_spec(tree: Any) -> Any:
    """The JSON description of an output tree: ``{"shape": [null, ...], "dtype": ...}`` per leaf."""
    return tree_map(lambda a: spec_of(a).to_json(), tree)
