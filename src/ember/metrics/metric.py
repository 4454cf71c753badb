"""``Metric``: Ignite's attachable-metric protocol, for torchmetrics metrics and Ember's own.

A metric is attached to an Engine under a name and then lives on the three events of its usage
(:mod:`ember.metrics.usage`), at ``Priority.METRICS`` (before user handlers and loggers read
``engine.state.metrics``)::

    usage=EpochWise() (default)    EPOCH_STARTED        reset()
                                   ITERATION_COMPLETED  update(output_transform(engine.state.output))
                                   EPOCH_COMPLETED      engine.state.metrics[name] = compute()

What ``update`` receives is Ignite's: ``output_transform(engine.state.output)``; a dict is turned
into the tuple of its ``required_output_keys`` (``("y_pred", "y")``), and a pair of lists of
per-sample tensors or numbers (``([y_pred_0, y_pred_1], [y_0, y_1])``) is fed one sample at a time
unless ``skip_unrolling=True``.

Any ``torchmetrics.Metric`` becomes attachable by wrapping it::

    auroc = Metric(MulticlassAUROC(num_classes=10), output_transform=lambda out: (out["logits"], out["y"]))
    auroc.attach(evaluator, "auroc")

Its state stays on the device (moved to the first batch's device unless ``device`` is given) and
``compute()`` syncs it across processes when ``torch.distributed`` is initialised. A 0-d result is
stored in ``engine.state.metrics`` as a Python number (as Ignite does), other tensors on the CPU, and
a dict result under each of its keys as well as ``name``.

Metrics written for Ignite (``reset``/``update``/``compute`` overridden, ``super().__init__(output_transform,
device=device)``, ``@reinit__is_reduced``, ``@sync_all_reduce("_sum", "_n")``) subclass this class as they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from numbers import Number
from typing import Any

import torch

from ember.distributed import comms
from ember.engine.events import Priority
from ember.metrics.usage import EpochWise, MetricUsage, check_usage
from ember.optional import require

_RESULT_MODES = ("flatten", "named", "both")


class NotComputableError(RuntimeError):
    """``compute()`` was called before any ``update()`` (Ignite's name)."""


def require_torchmetrics() -> None:
    require("torchmetrics", "metrics", "ember.metrics")


def _identity(x: Any) -> Any:
    return x


def _is_torchmetric(obj: Any) -> bool:
    return all(callable(getattr(obj, m, None)) for m in ("update", "compute", "reset"))


class Metric:
    """An attachable metric. Wrap a torchmetrics metric (``Metric(tm_metric)``), use a ready one
    (``Accuracy``, ``Precision``, ``Recall``, ``Fbeta``, ``Loss``, ``Average``, ...), or subclass and
    override ``reset``/``update``/``compute`` as with Ignite.

    Args:
        metric: a ``torchmetrics.Metric`` (or anything with ``update``, ``compute``, ``reset``) to
            wrap. A plain callable here is taken as ``output_transform`` (Ignite's positional form,
            ``super().__init__(output_transform, device=device)``).
        output_transform: maps ``engine.state.output`` to what ``update`` takes.
        device: where the metric's state lives (default: the device of the first batch).
        skip_unrolling: feed a pair of lists of per-sample tensors to ``update`` as it is.
        metrics_result_mode: for a dict result: store its keys ("flatten"), the dict under the
            metric's name ("named") or both.
    """

    #: the keys a dict output must have; it is passed on as the tuple of their values
    required_output_keys: tuple[str, ...] | None = ("y_pred", "y")

    def __init__(
        self,
        metric: Any = None,
        output_transform: Callable | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
        metrics_result_mode: str = "both",
    ) -> None:
        if metric is not None and not _is_torchmetric(metric):
            # Ignite's positional form, Metric(output_transform, device, skip_unrolling): shift the arguments
            if not callable(metric) or callable(output_transform):
                raise TypeError(
                    f"metric must be a torchmetrics.Metric (with update, compute, reset), got {type(metric).__name__}"
                )
            if output_transform is not None:
                if isinstance(device, bool):
                    skip_unrolling = device
                device = output_transform
            metric, output_transform = None, metric
        if output_transform is not None and not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {output_transform!r}")
        if metrics_result_mode not in _RESULT_MODES:
            raise ValueError(f"metrics_result_mode={metrics_result_mode!r}; choose one of {_RESULT_MODES}")
        self._metric = metric
        self._output_transform = output_transform or _identity
        self._device = torch.device(device) if device is not None else None
        self._skip_unrolling = bool(skip_unrolling)
        self._metrics_result_mode = metrics_result_mode
        self._placed = False
        self._updates = 0
        self._is_reduced = False
        self.reset()

    @property
    def metric(self) -> Any:
        """The wrapped torchmetrics metric (None for metrics computed by Ember's own code)."""
        return self._metric

    @property
    def device(self) -> torch.device | None:
        """Where the state lives: the ``device`` given, else None until the first batch decides."""
        return self._device

    # ------------------------------------------------------------------ Ignite's protocol

    def reset(self) -> None:
        """Clear the accumulated state (the wrapped metric's too); called at the usage's ``STARTED`` event.

        Override it (with ``@reinit__is_reduced``) in a metric of your own to zero its sums.
        """
        if self._metric is not None:
            self._metric.reset()
        self._updates = 0

    def update(self, output: Any) -> None:
        """Add one batch's output to the state; called at each (filtered) ``ITERATION_COMPLETED``.

        Args:
            output: ``output_transform(engine.state.output)``, a dict turned into the tuple of
                ``required_output_keys``; a wrapped torchmetrics metric receives a tuple or list as
                positional arguments, a dict as keyword arguments, anything else as one argument.
        """
        metric = self._metric
        if metric is None:
            raise NotImplementedError(f"{type(self).__name__} must override update() (or wrap a torchmetrics metric)")
        args, kwargs = _call_args(output)
        self._place(next((a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)), None))
        metric.update(*args, **kwargs)
        self._updates += 1

    def compute(self) -> Any:
        """The metric's value over the updates since the last reset (a tensor, number or dict);
        called at the usage's ``COMPLETED`` event.

        Raises:
            NotComputableError: when there was no update since the last reset.
        """
        if self._metric is None:
            raise NotImplementedError(f"{type(self).__name__} must override compute() (or wrap a torchmetrics metric)")
        if self._updates == 0:
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
        """The handler of the usage's ``STARTED`` event: :meth:`reset`."""
        self.reset()

    @torch.no_grad()
    def iteration_completed(self, engine: Any) -> None:
        """The handler of the usage's ``ITERATION_COMPLETED`` event: transform ``engine.state.output``
        and :meth:`update` with it (per sample for a pair of lists, unless ``skip_unrolling``), without
        gradients."""
        output = self._output_transform(engine.state.output)
        if isinstance(output, Mapping):
            output = self._from_mapping(output)
        if not self._skip_unrolling and _per_sample_lists(output):
            if not (len(output) == 2 and len(output[0]) == len(output[1])):
                raise ValueError(
                    f"{type(self).__name__}: a list output must be 2 lists of the same length (per-sample y_pred and y), "
                    f"got {len(output)} items" + (f" of lengths {[len(o) for o in output]}" if output else "")
                )
            for o1, o2 in zip(output[0], output[1]):
                t1 = o1.unsqueeze(0) if isinstance(o1, torch.Tensor) else torch.tensor([o1])
                t2 = o2.unsqueeze(0) if isinstance(o2, torch.Tensor) else torch.tensor([o2], device=t1.device)
                self.update((t1, t2))
        else:
            self.update(output)

    def _from_mapping(self, output: Mapping) -> Any:
        """A dict output as ``update`` takes it: the tuple of ``required_output_keys``."""
        keys = self.required_output_keys
        if keys is not None and all(k in output for k in keys):
            return tuple(output[k] for k in keys)
        if self._metric is not None:  # a wrapped torchmetrics metric: the dict's keys are its keyword arguments
            return output
        if keys is None:
            raise TypeError(f"{type(self).__name__}: the transformed engine output must be a tuple or list, got a dict")
        raise ValueError(
            f"{type(self).__name__}: a dict output must have the keys {list(keys)}, got {list(output)}; "
            "pass output_transform=lambda out: (y_pred, y) otherwise"
        )

    def completed(self, engine: Any, name: str) -> None:
        """The handler of the usage's ``COMPLETED`` event: :meth:`compute` into ``engine.state.metrics[name]``
        (see :func:`store_result`)."""
        store_result(engine, name, self.compute(), self._metrics_result_mode)

    def attach(self, engine: Any, name: str, usage: str | MetricUsage = EpochWise()) -> None:  # noqa: B008
        """Compute this metric on ``engine`` into ``engine.state.metrics[name]`` at the events of
        ``usage`` (see :mod:`ember.metrics.usage`). Attaching again under another name adds only
        the compute step: the metric is reset and updated once."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        usage = check_usage(usage)
        if not engine.has_event_handler(self.started, usage.STARTED):
            engine.add_event_handler(usage.STARTED, self.started, priority=Priority.METRICS)
        if not engine.has_event_handler(self.iteration_completed, usage.ITERATION_COMPLETED):
            engine.add_event_handler(usage.ITERATION_COMPLETED, self.iteration_completed, priority=Priority.METRICS)
        engine.add_event_handler(usage.COMPLETED, self.completed, name, priority=Priority.METRICS)

    def detach(self, engine: Any, usage: str | MetricUsage = EpochWise()) -> None:  # noqa: B008
        """Remove this metric's handlers from ``engine`` (its last value stays in ``state.metrics``)."""
        usage = check_usage(usage)
        for event, handler in (
            (usage.COMPLETED, self.completed),
            (usage.STARTED, self.started),
            (usage.ITERATION_COMPLETED, self.iteration_completed),
        ):
            if engine.has_event_handler(handler, event):
                engine.remove_event_handler(handler, event)

    def is_attached(self, engine: Any, usage: str | MetricUsage = EpochWise()) -> bool:  # noqa: B008
        """Whether this metric computes on ``engine`` at the ``COMPLETED`` event of ``usage``."""
        return bool(engine.has_event_handler(self.completed, check_usage(usage).COMPLETED))


def store_result(engine: Any, name: str, result: Any, mode: str = "both") -> None:
    """Put a computed value into ``engine.state.metrics`` the way Ignite does: a 0-d tensor as a
    number, other tensors on the CPU; a dict under each key ("flatten"), under ``name`` ("named") or both."""
    metrics = engine.state.metrics
    if isinstance(result, Mapping):
        if mode != "flatten" and name in result:
            raise ValueError(f"metric {name!r} returned a dict that has a key {name!r} too; rename one")
        plain = {k: _plain(v) for k, v in result.items()}
        if mode != "named":
            metrics.update(plain)
        if mode != "flatten":
            metrics[name] = plain
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


def _per_sample_lists(output: Any) -> bool:
    """Ignite's test for an output to unroll: a sequence whose items are all lists of tensors/numbers."""
    return isinstance(output, Sequence) and all(
        isinstance(o, Sequence) and all(isinstance(t, (torch.Tensor, Number)) for t in o) for o in output
    )


def pair(output: Any, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` from what ``update`` got: a 2-tuple or ``{"y_pred", "y"}``."""
    if isinstance(output, Mapping) and "y_pred" in output and "y" in output:
        return output["y_pred"], output["y"]
    if isinstance(output, (tuple, list)) and len(output) == 2:
        return output[0], output[1]
    raise TypeError(
        f"{who}.update expects (y_pred, y) or {{'y_pred': ..., 'y': ...}}; got {type(output).__name__}. "
        "Pass output_transform=lambda out: (y_pred, y) when the engine's output is something else"
    )


# ---------------------------------------------------------------------- Ignite's decorators for custom metrics


def reinit__is_reduced(func: Callable) -> Callable:
    """Decorate ``reset``/``update`` of a custom metric: the state changed, so the next
    ``compute`` reduces it across processes again (Ignite's decorator)."""

    @functools.wraps(func)
    def wrapper(self: Metric, *args: Any, **kwargs: Any) -> Any:
        out = func(self, *args, **kwargs)
        self._is_reduced = False
        return out

    return wrapper


def sync_all_reduce(*attrs: str) -> Callable:
    """Decorate ``compute`` of a custom metric: the named state attributes (``"name"`` to sum,
    ``"name:MAX"``/``MIN``/``PRODUCT`` otherwise) are reduced over all processes for the call, and put
    back after it, so computing twice never reduces twice (Ignite's decorator)."""
    parsed = []
    for attr in attrs:
        name, _, op = attr.partition(":")
        if op and op not in ("SUM", "MIN", "MAX", "PRODUCT"):
            raise ValueError(f"sync_all_reduce: {attr!r} has op {op!r}; choose SUM, MIN, MAX or PRODUCT")
        parsed.append((name, op or "SUM"))

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(self: Metric, *args: Any, **kwargs: Any) -> Any:
            if comms.get_world_size() == 1 or not parsed:
                return func(self, *args, **kwargs)
            saved = {}
            for name, op in parsed:
                if name not in self.__dict__:
                    raise ValueError(f"{type(self).__name__} has no attribute {name!r} to reduce")
                value = self.__dict__[name]
                saved[name] = value
                setattr(self, name, comms.all_reduce(value.clone() if isinstance(value, torch.Tensor) else value, op))
            self._is_reduced = True
            try:
                return func(self, *args, **kwargs)
            finally:
                for name, value in saved.items():
                    setattr(self, name, value)

        return wrapper

    return decorator
