"""Ignite's logging handlers, for any Ember logger: ``OutputHandler``, ``OptimizerParamsHandler``
and ``global_step_from_engine``.

A handler is called as ``handler(engine, logger, event_name)`` (``logger.attach`` binds the last
two). Values stay tensors: the logger moves them to the host when it writes them.

Names are joined as Ignite's handler for that logger joins them: ``"training/loss"``,
``"lr/group_0"`` (TensorBoard, CSV), or with spaces where the logger says so with
``engine_name_separator = " "`` (MLflow: ``"training loss"``, ``"lr group_0"``).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ember.handlers.utils import global_step_from_engine
from ember.loggers.send import send_metrics

__all__ = ["OptimizerParamsHandler", "OutputHandler", "event_step", "global_step_from_engine", "name_separator"]

_ITERATION_EVENTS = {"ITERATION_STARTED", "ITERATION_COMPLETED", "GET_BATCH_STARTED", "GET_BATCH_COMPLETED"}
_EPOCH_EVENTS = {"STARTED", "EPOCH_STARTED", "EPOCH_COMPLETED", "COMPLETED"}


def event_step(engine: Any, event_name: Any) -> int:
    """The engine's counter for ``event_name``: ``state.iteration`` for batch and iteration events,
    ``state.epoch`` for epoch events (Ignite's ``state.get_event_attrib_value``)."""
    key = getattr(event_name, "name", None) or str(event_name)
    if key in _ITERATION_EVENTS:
        return engine.state.iteration
    if key in _EPOCH_EVENTS:
        return engine.state.epoch
    attr = engine.state.event_to_attr.get(key, "iteration")  # custom events: register_events(event_to_attr=)
    return getattr(engine.state, attr)


def name_separator(logger: Any) -> str:
    """How the parts of a metric name are joined for ``logger``: ``"/"``, or its ``engine_name_separator``."""
    return getattr(logger, "engine_name_separator", "/")


class OutputHandler:
    """Log engine metrics, the engine output and state attributes as ``"<tag>/<name>"`` scalars
    (``"<tag> <name>"`` for MLflow, as Ignite).

    Args:
        tag: prefix of every name ("training", "validation").
        metric_names: names in ``engine.state.metrics`` to log, or "all".
        output_transform: maps ``engine.state.output`` to a number, a 0-d tensor or a dict of them.
        global_step_transform: ``(engine, event_name) -> int``; default: the engine's iteration
            for iteration events, its epoch for epoch events.
        state_attributes: names of ``engine.state`` attributes to log.

    Dicts nest into ``"tag/a/b"``; lists and 1-d tensors into ``"tag/name/0"``, ``"tag/name/1"``, ...
    (with the logger's separator).
    """

    def __init__(
        self,
        tag: str,
        metric_names: str | list[str] | None = None,
        output_transform: Callable | None = None,
        global_step_transform: Callable | None = None,
        state_attributes: list[str] | None = None,
    ) -> None:
        if not isinstance(tag, str):
            raise TypeError(f"tag must be a string, got {tag!r}")
        if (
            metric_names is not None
            and metric_names != "all"
            and not (isinstance(metric_names, (list, tuple)) and all(isinstance(n, str) for n in metric_names))
        ):
            raise TypeError(f"metric_names must be a list of names or 'all', got {metric_names!r}")
        if output_transform is not None and not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {output_transform!r}")
        if global_step_transform is not None and not callable(global_step_transform):
            raise TypeError(f"global_step_transform must be callable, got {global_step_transform!r}")
        if metric_names is None and output_transform is None and state_attributes is None:
            raise ValueError(
                "OutputHandler needs metric_names, output_transform or state_attributes: there would be nothing to log"
            )
        self.tag = tag
        self.metric_names = metric_names
        self.output_transform = output_transform
        self.global_step_transform = global_step_transform or event_step
        self.state_attributes = list(state_attributes or [])

    def __call__(self, engine: Any, logger: Any, event_name: Any) -> None:
        values: dict[str, Any] = {}
        metrics = engine.state.metrics
        if self.metric_names == "all":
            values.update(metrics)
        elif self.metric_names is not None:
            for name in self.metric_names:
                if name in metrics:
                    values[name] = metrics[name]
                else:
                    warnings.warn(
                        f"OutputHandler: metric {name!r} is not in engine.state.metrics {sorted(metrics)}", stacklevel=2
                    )
        if self.output_transform is not None:
            out = self.output_transform(engine.state.output)
            values.update(out if isinstance(out, Mapping) else {"output": out})
        for name in self.state_attributes:
            values[name] = getattr(engine.state, name, None)
        step = self.global_step_transform(engine, event_name)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"global_step_transform must return an int, got {step!r}")
        flat: dict[str, Any] = {}
        _flatten(self.tag, values, flat, name_separator(logger))
        if flat:
            send_metrics([logger], flat, int(step))


class OptimizerParamsHandler:
    """Log ``param_name`` (default "lr") of each parameter group as ``"[<tag>/]<param_name>/group_<i>"``
    (``"[<tag> ]<param_name> group_<i>"`` for MLflow, as Ignite)."""

    def __init__(self, optimizer: Any, param_name: str = "lr", tag: str | None = None) -> None:
        if not isinstance(getattr(optimizer, "param_groups", None), Sequence):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer (something with param_groups), got {type(optimizer).__name__}"
            )
        if not isinstance(param_name, str):
            raise TypeError(f"param_name must be a string, got {param_name!r}")
        missing = [i for i, g in enumerate(optimizer.param_groups) if param_name not in g]
        if missing:
            raise ValueError(f"param_name={param_name!r} is not in parameter groups {missing} of the optimizer")
        self.optimizer = optimizer
        self.param_name = param_name
        self.tag = tag

    def __call__(self, engine: Any, logger: Any, event_name: Any) -> None:
        sep = name_separator(logger)
        prefix = f"{self.tag}{sep}" if self.tag else ""
        values = {
            f"{prefix}{self.param_name}{sep}group_{i}": group[self.param_name]
            for i, group in enumerate(self.optimizer.param_groups)
        }
        send_metrics([logger], values, event_step(engine, event_name))


def _flatten(key: str, value: Any, out: dict[str, Any], sep: str = "/") -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{key}{sep}{k}" if key else str(k), v, out, sep)
    elif isinstance(value, torch.Tensor):
        if value.ndim == 0 or value.numel() == 1:
            out[key] = value.detach()
        elif value.ndim == 1:
            for i, v in enumerate(value.detach()):
                out[f"{key}{sep}{i}"] = v
        else:
            warnings.warn(
                f"{key!r}: a tensor of shape {tuple(value.shape)} cannot be logged as scalars; skipped", stacklevel=3
            )
    elif isinstance(value, numbers.Real):
        out[key] = value
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, v in enumerate(value):
            _flatten(f"{key}{sep}{i}", v, out, sep)
    else:
        warnings.warn(f"{key!r}: a {type(value).__name__} cannot be logged as a scalar; skipped", stacklevel=3)
