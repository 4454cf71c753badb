"""``Loss``: the mean of a loss function over an epoch, weighted by batch size (Ignite's ``Loss``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ember.metrics.metric import Metric, require_torchmetrics


class Loss(Metric):
    """``sum(loss_fn(y_pred, y, **criterion_kwargs) * n) / sum(n)`` over the batches, ``n = batch_size(y)``.

    ``output_transform`` returns ``(y_pred, y)``, ``(y_pred, y, criterion_kwargs)`` or a dict with
    ``"y_pred"``, ``"y"`` and optionally ``"criterion_kwargs"`` (keyword arguments for ``loss_fn``);
    ``loss_fn`` must return the batch's mean loss as a scalar. The running sums are kept in float64
    on the batch's device (NaN losses propagate, and no value is read on the host until
    ``compute()``), and summed over the processes at ``compute()``. Example::

        Loss(torch.nn.functional.cross_entropy).attach(evaluator, "nll")
    """

    required_output_keys = ("y_pred", "y", "criterion_kwargs")

    def __init__(
        self,
        loss_fn: Callable,
        output_transform: Callable | None = None,
        batch_size: Callable[[Any], int] = len,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        require_torchmetrics()
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
        if not callable(batch_size):
            raise TypeError(f"batch_size must be callable (y -> int), got {batch_size!r}")
        super().__init__(_weighted_mean_class()(), output_transform, device, skip_unrolling)
        self._loss_fn = loss_fn
        self._batch_size = batch_size

    def _from_mapping(self, output: Mapping) -> Any:
        if "y_pred" in output and "y" in output:  # criterion_kwargs may be left out (Ignite requires it)
            return output["y_pred"], output["y"], output.get("criterion_kwargs", {})
        raise ValueError(
            f"Loss: a dict output must have the keys 'y_pred', 'y' (and optionally 'criterion_kwargs'), got {list(output)}"
        )

    def update(self, output: Any) -> None:
        """Add ``loss_fn(y_pred, y, **criterion_kwargs)`` (computed without gradients), weighted by
        ``batch_size(y)``, to the running sums.

        Args:
            output: ``(y_pred, y)`` or ``(y_pred, y, criterion_kwargs)``.
        """
        if isinstance(output, (tuple, list)) and len(output) == 3:
            y_pred, y, kwargs = output
        elif isinstance(output, (tuple, list)) and len(output) == 2:
            (y_pred, y), kwargs = output, {}
        else:
            raise TypeError(f"Loss.update expects (y_pred, y) or (y_pred, y, kwargs), got {type(output).__name__}")
        with torch.no_grad():
            loss = self._loss_fn(y_pred, y, **(kwargs or {}))
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"Loss: loss_fn must return a scalar tensor (the batch mean), got {shape}")
        n = self._batch_size(y)
        self._place(loss)
        self._metric.update(loss.detach().reshape(()), n)
        self._updates += 1

    def compute(self) -> float:
        """The batch-size-weighted mean loss since the last reset, over all processes, as a float.

        Raises:
            NotComputableError: when there was no update since the last reset.
        """
        return float(super().compute())


@functools.cache
def _weighted_mean_class() -> type:
    # torchmetrics' MeanMetric(nan_strategy="disable") drops the weights, and its other strategies
    # read every value on the host; this keeps two summed states and nothing else
    import torchmetrics

    class WeightedMean(torchmetrics.Metric):
        full_state_update = False

        def __init__(self) -> None:
            super().__init__()
            self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("weight", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

        def update(self, value: torch.Tensor, weight: float) -> None:
            self.total += value.to(torch.float64) * weight
            self.weight += weight

        def compute(self) -> torch.Tensor:
            return self.total / self.weight

    return WeightedMean
