"""``RunningAverage``: an exponential moving average of a metric or of the engine output, per iteration."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from ember.engine.events import Events, Priority
from ember.metrics.metric import Metric, NotComputableError

_USAGES = ("running_batch_wise", "single_epoch_running_batch_wise")


class RunningAverage(Metric):
    """``value = alpha * value + (1 - alpha) * x`` after every iteration (the first ``x`` as is),
    where ``x`` is ``src``'s value on the batch, or ``output_transform(engine.state.output)``.

    Attached, it resets when the run starts (``usage="running_batch_wise"``, Ignite's default) or
    at every epoch start (``"single_epoch_running_batch_wise"``) and stores its value in
    ``engine.state.metrics[name]`` after every iteration — as a 0-d tensor on the batch's device, so
    no host sync happens per step (``float()`` it to read it). With ``output_transform`` and
    ``torch.distributed`` initialised, each ``x`` is averaged over the processes first (an
    all-reduce, which stays on the device); a ``src`` metric syncs itself. Example::

        RunningAverage(output_transform=lambda loss: loss).attach(trainer, "running_loss")
        RunningAverage(Accuracy(), alpha=0.9).attach(trainer, "running_acc")
    """

    def __init__(
        self,
        src: Metric | None = None,
        alpha: float = 0.98,
        output_transform: Callable | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if (src is None) == (output_transform is None):
            raise ValueError("RunningAverage needs exactly one of src (a metric) and output_transform")
        if src is not None and not isinstance(src, Metric):
            raise TypeError(f"src must be an ember.metrics.Metric, got {type(src).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}")
        super().__init__(None, output_transform if src is None else src._output_transform, device)
        self.src = src
        self.alpha = float(alpha)
        self._value: Any = None

    def reset(self) -> None:
        self._value = None
        self._updates = 0

    def update(self, output: Any) -> None:
        if self.src is not None:
            self.src.reset()
            self.src.update(output)
            x = self.src.compute()
        else:
            x = _mean_over_processes(output.detach() if isinstance(output, torch.Tensor) else output)
        if isinstance(x, torch.Tensor) and self._device is not None:
            x = x.to(self._device)
        self._value = x if self._value is None else self._value * self.alpha + x * (1.0 - self.alpha)
        self._updates += 1

    def compute(self) -> Any:
        if self._value is None:
            raise NotComputableError("RunningAverage must have at least one update before it can be computed")
        return self._value

    def completed(self, engine: Any, name: str) -> None:
        engine.state.metrics[name] = self.compute()

    def attach(self, engine: Any, name: str, usage: str = "running_batch_wise") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        handles = [
            engine.add_event_handler(_reset_event(usage), self.started, priority=Priority.METRICS),
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed, priority=Priority.METRICS),
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.completed, name, priority=Priority.METRICS),
        ]
        self._handles.setdefault(engine, []).extend(handles)

    def detach(self, engine: Any, usage: str = "running_batch_wise") -> None:
        _reset_event(usage)
        for handle in self._handles.pop(engine, []):
            handle.remove()

    def is_attached(self, engine: Any, usage: str = "running_batch_wise") -> bool:
        _reset_event(usage)
        return bool(self._handles.get(engine))


def _reset_event(usage: str) -> Any:
    if usage == "running_batch_wise":
        return Events.STARTED
    if usage == "single_epoch_running_batch_wise":
        return Events.EPOCH_STARTED
    raise ValueError(f"usage={usage!r} is not supported for RunningAverage; choose one of {_USAGES}")


def _mean_over_processes(x: Any) -> Any:
    dist = torch.distributed
    if (
        not isinstance(x, torch.Tensor)
        or not (dist.is_available() and dist.is_initialized())
        or dist.get_world_size() == 1
    ):
        return x
    x = x.clone().float()
    dist.all_reduce(x)
    return x / dist.get_world_size()
