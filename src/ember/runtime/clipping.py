"""Gradient clipping: the one routine behind ``Trainer(gradient_clip_val=...)`` and ``Module.clip_gradients``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

CLIP_ALGORITHMS = ("norm", "value")


def check_clip_algorithm(algorithm: Any) -> str:
    """``algorithm`` if it is one of :data:`CLIP_ALGORITHMS`, else a ``ValueError`` naming it."""
    if algorithm not in CLIP_ALGORITHMS:
        raise ValueError(f"gradient_clip_algorithm={algorithm!r}; choose 'norm' or 'value'")
    return algorithm


def optimizer_parameters(optimizer: Any) -> list[torch.Tensor]:
    """Every parameter an optimizer updates, in param-group order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def clip_gradients(parameters: Iterable[torch.Tensor], clip_val: float | None, algorithm: str = "norm") -> None:
    """Clip the gradients of ``parameters`` in place: total norm at most ``clip_val`` (``"norm"``)
    or every element within ``±clip_val`` (``"value"``). Nothing happens for a falsy ``clip_val``;
    parameters without a gradient are skipped."""
    if not clip_val:
        return
    if algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(parameters, clip_val)
    elif algorithm == "value":
        torch.nn.utils.clip_grad_value_(parameters, clip_val)
    else:
        check_clip_algorithm(algorithm)
