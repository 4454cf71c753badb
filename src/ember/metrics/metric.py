"""``Metric``: Ignite's attachable-metric protocol, computed by torchmetrics.

A metric is attached to an Engine under a name and then lives on its events, at
``Priority.METRICS`` (before user handlers and loggers read ``engine.state.metrics``)::

    usage="epoch_wise" (default)   EPOCH_STARTED        reset()
                                   ITERATION_COMPLETED  update(output_transform(engine.state.output))
                                   EPOCH_COMPLETED      engine.state.metrics[name] = compute()
    usage="batch_wise"             the same around each iteration (ITERATION_STARTED .. _COMPLETED)

Any ``torchmetrics.Metric`` becomes attachable by wrapping it::

    auroc = Metric(MulticlassAUROC(num_classes=10), output_transform=lambda out: (out["logits"], out["y"]))
    auroc.attach(evaluator, "auroc")

The arithmetic is torchmetrics': its state stays on the device (moved to the first batch's device
unless ``device`` is given) and ``compute()`` syncs it across processes when ``torch.distributed``
is initialised. A 0-d result is stored in ``engine.state.metrics`` as a Python number (as Ignite
does), other tensors on the CPU, and a dict result under each of its keys as well as ``name``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ember.engine.events import Events, Priority
from ember.optional import require

_USAGES = ("epoch_wise", "batch_wise")


class NotComputableError(RuntimeError):
    """``compute()`` was called before any ``update()`` (Ignite's name)."""


def require_torchmetrics() -> None:
    require("torchmetrics", "metrics", "ember.metrics")


def _identity(x: Any) -> Any:
    return x


class Metric:
    """An attachable metric. Wrap a torchmetrics metric (``Metric(tm_metric)``), use a ready one
    (``Accuracy``, ``Precision``, ``Recall``, ``F1``, ``Loss``), or subclass and override
    ``reset``/``update``/``compute`` as with Ignite.

    Args:
        metric: a ``torchmetrics.Metric`` (or anything with ``update``, ``compute``, ``reset``).
        output_transform: maps ``engine.state.output`` to what ``update`` takes; a tuple is passed
            as positional arguments (``(y_pred, y)``), a dict as keyword arguments.
        device: where the metric's state lives (default: the device of the first batch).
    """

    def __init__(
        self, metric: Any = None, output_transform: Callable | None = None, device: str | torch.device | None = None
    ):
        if metric is not None and not all(callable(getattr(metric, m, None)) for m in ("update", "compute", "reset")):
            raise TypeError(
                f"metric must be a torchmetrics.Metric (with update, compute, reset), got {type(metric).__name__}"
            )
        if output_transform is not None and not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {output_transform!r}")
        self._metric = metric
        self._output_transform = output_transform or _identity
        self._device = torch.device(device) if device is not None else None
        self._placed = False
        self._updates = 0
        self._handles: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()

    @property
    def metric(self) -> Any:
        """The torchmetrics metric doing the work (None until the first batch for lazily built ones)."""
        return self._metric

    # ------------------------------------------------------------------ Ignite's protocol

    def reset(self) -> None:
        if self._metric is not None:
            self._metric.reset()
        self._updates = 0

    def update(self, output: Any) -> None:
        metric = self._metric
        if metric is None:
            raise RuntimeError(f"{type(self).__name__} has no torchmetrics metric to update")
        args, kwargs = _call_args(output)
        self._place(next((a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)), None))
        metric.update(*args, **kwargs)
        self._updates += 1

    def compute(self) -> Any:
        if self._updates == 0 or self._metric is None:
            raise NotComputableError(f"{type(self).__name__} must have at least one update before it can be computed")
        return self._metric.compute()

    def _place(self, example: torch.Tensor | None) -> None:
        """Move the torchmetrics state to ``device`` or the first batch's device, once."""
        if self._placed or self._metric is None:
            return
        device = self._device or (example.device if example is not None else None)
        if device is not None and callable(getattr(self._metric, "to", None)):
            self._metric = self._metric.to(device)
        self._placed = True

    # ------------------------------------------------------------------ engine handlers

    def started(self, engine: Any) -> None:
        self.reset()

    def iteration_completed(self, engine: Any) -> None:
        self.update(self._output_transform(engine.state.output))

    def completed(self, engine: Any, name: str) -> None:
        store_result(engine, name, self.compute())

    def attach(self, engine: Any, name: str, usage: str = "epoch_wise") -> None:
        """Compute this metric on ``engine`` into ``engine.state.metrics[name]`` (see the module doc)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        start, update, done = _events(usage)
        handles = [
            engine.add_event_handler(start, self.started, priority=Priority.METRICS),
            engine.add_event_handler(update, self.iteration_completed, priority=Priority.METRICS),
            engine.add_event_handler(done, self.completed, name, priority=Priority.METRICS),
        ]
        self._handles.setdefault(engine, []).extend(handles)

    def detach(self, engine: Any, usage: str = "epoch_wise") -> None:
        """Remove this metric's handlers from ``engine`` (its last value stays in ``state.metrics``)."""
        _events(usage)
        for handle in self._handles.pop(engine, []):
            handle.remove()

    def is_attached(self, engine: Any, usage: str = "epoch_wise") -> bool:
        _events(usage)
        return bool(self._handles.get(engine))


def store_result(engine: Any, name: str, result: Any) -> None:
    """Put a computed value into ``engine.state.metrics`` the way Ignite does."""
    metrics = engine.state.metrics
    if isinstance(result, Mapping):
        if name in result:
            raise ValueError(f"metric {name!r} returned a dict that has a key {name!r} too; rename one")
        for key, value in result.items():
            metrics[key] = _plain(value)
        metrics[name] = {k: _plain(v) for k, v in result.items()}
    else:
        metrics[name] = _plain(result)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.ndim == 0 else value.detach().cpu()
    return value


def _call_args(output: Any) -> tuple[tuple, dict]:
    if isinstance(output, (tuple, list)):
        return tuple(output), {}
    if isinstance(output, Mapping):
        return (), dict(output)
    return (output,), {}


def _events(usage: str) -> tuple[Any, Any, Any]:
    if usage == "epoch_wise":
        return Events.EPOCH_STARTED, Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED
    if usage == "batch_wise":
        return Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED
    raise ValueError(f"usage={usage!r} is not supported; choose one of {_USAGES}")


def pair(output: Any, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` from what ``output_transform`` returned: a 2-tuple or ``{"y_pred", "y"}``."""
    if isinstance(output, Mapping) and "y_pred" in output and "y" in output:
        return output["y_pred"], output["y"]
    if isinstance(output, (tuple, list)) and len(output) == 2:
        return output[0], output[1]
    raise TypeError(
        f"{who}.update expects (y_pred, y) or {{'y_pred': ..., 'y': ...}}; got {type(output).__name__}. "
        "Pass output_transform=lambda out: (y_pred, y) when the engine's output is something else"
    )
