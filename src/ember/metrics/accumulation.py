"""``Average``, ``GeometricAverage`` and their base ``VariableAccumulation`` (Ignite's), in Ember's code.

Each update takes a number or a tensor: a number or a tensor of at most one dimension is one
example, a tensor of more dimensions is a batch along its first dimension. So ``Average`` of a
vector output is the element-wise mean of the vectors, and of ``(N, D)`` outputs the mean of the
``N`` rows, as in Ignite. The sums are kept in float64 on the first tensor's device (or ``device``)
and summed over the processes at ``compute()``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from ember.distributed import comms
from ember.metrics.metric import Metric, NotComputableError


class VariableAccumulation(Metric):
    """Folds each update into an accumulator with ``op(accumulator, value)``; ``compute()`` returns
    ``(accumulator, num_examples)``. The base of :class:`Average` and :class:`GeometricAverage`."""

    required_output_keys = None

    def __init__(
        self,
        op: Callable[[torch.Tensor, Any], torch.Tensor],
        output_transform: Callable | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        if not callable(op):
            raise TypeError(f"op must be callable(accumulator, value), got {op!r}")
        self._op = op
        super().__init__(None, output_transform, device, skip_unrolling)

    def reset(self) -> None:
        """Zero the accumulator (float64, float32 on MPS, on ``device`` or the CPU until the first
        tensor) and the example count."""
        device = self._device or torch.device("cpu")
        self._dtype = torch.float32 if device.type == "mps" else torch.float64
        self.accumulator = torch.tensor(0.0, dtype=self._dtype, device=device)
        self.num_examples = 0
        self._updates = 0

    def update(self, output: Any) -> None:
        """Fold one output into the accumulator with ``op`` and count its examples.

        Args:
            output: a number, or a tensor (detached, cast to the accumulator's dtype and device): one
                example when it has at most one dimension, else a batch along its first dimension.
        """
        if isinstance(output, torch.Tensor):
            output = output.detach()
            if self._updates == 0 and self._device is None and output.device != self.accumulator.device:
                self.accumulator = self.accumulator.to(output.device)  # the state follows the first batch
            output = output.to(self.accumulator)
        elif not isinstance(output, numbers.Number):
            raise TypeError(
                f"{type(self).__name__}: the output must be a number or a tensor, got {type(output).__name__}"
            )
        self.accumulator = self._op(self.accumulator, output)
        self.num_examples += output.shape[0] if isinstance(output, torch.Tensor) and output.ndim > 1 else 1
        self._updates += 1

    def _reduced(self) -> tuple[torch.Tensor, int]:
        if comms.get_world_size() == 1:
            return self.accumulator, self.num_examples
        return comms.all_reduce(self.accumulator.clone()), comms.all_reduce(self.num_examples)

    def compute(self) -> Any:
        """``(accumulator, num_examples)``, each summed over the processes when running distributed."""
        return self._reduced()


def _mean_op(accumulator: torch.Tensor, x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor) and x.ndim > 1:
        x = x.sum(dim=0)
    return accumulator + x


def _log_op(accumulator: torch.Tensor, x: Any) -> torch.Tensor:
    x = torch.log(x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=accumulator.dtype))
    if x.ndim > 1:
        x = x.sum(dim=0)
    return accumulator + x.to(accumulator.device)


class Average(VariableAccumulation):
    """The arithmetic mean of the outputs (numbers, vectors, or batches of them; see the module doc)::

    Average(output_transform=lambda out: out["loss"]).attach(trainer, "mean_loss")
    """

    def __init__(
        self,
        output_transform: Callable | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(_mean_op, output_transform, device, skip_unrolling)

    def compute(self) -> float | torch.Tensor:
        """The mean over every example (a 0-d tensor, or one of the outputs' shape), over all processes.

        Raises:
            NotComputableError: when no example was seen since the last reset.
        """
        total, n = self._reduced()
        if n < 1:
            raise NotComputableError("Average must have at least one example before it can be computed")
        return total / n


class GeometricAverage(VariableAccumulation):
    """The geometric mean of the outputs, ``exp(mean(log(x)))`` (positive values; see the module doc).
    A one-element result is a Python number."""

    def __init__(
        self,
        output_transform: Callable | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(_log_op, output_transform, device, skip_unrolling)

    def compute(self) -> float | torch.Tensor:
        """``exp(mean(log(x)))`` over every example and process: a Python number when it has one
        element, else a tensor of the outputs' shape.

        Raises:
            NotComputableError: when no example was seen since the last reset.
        """
        total, n = self._reduced()
        if n < 1:
            raise NotComputableError("GeometricAverage must have at least one example before it can be computed")
        value = torch.exp(total / n)
        return value.item() if value.numel() == 1 else value
