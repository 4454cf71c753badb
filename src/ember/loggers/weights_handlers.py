"""Ignite's parameter and gradient handlers: ``WeightsScalarHandler``, ``GradsScalarHandler``,
``WeightsHistHandler`` and ``GradsHistHandler``.

Attach them to a logger on an engine's event; each parameter is logged under its name with ``.``
turned into ``/``, at the engine's counter for the event, with Ignite's names::

    tb.attach(trainer, WeightsScalarHandler(model), Events.ITERATION_COMPLETED(every=100))
    #   weights_norm/fc1/weight, weights_norm/fc1/bias, ...     (tag="t": "t/weights_norm/fc1/weight")
    tb.attach(trainer, GradsHistHandler(model, whitelist=["fc2"]), Events.EPOCH_COMPLETED)
    #   grads/fc2/weight, grads/fc2/bias                         (histograms)

``whitelist`` keeps the parameters whose names start with one of its prefixes, or for which
``whitelist(name, parameter)`` is true. Parameters without a gradient are skipped by the gradient
handlers. Scalars go through :func:`ember.loggers.send_metrics` (any Ember logger; a reduction
that returns a tensor stays on its device until the logger writes it); histograms need a
TensorBoard logger (its ``SummaryWriter``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ember.loggers.handlers import event_step
from ember.loggers.send import send_metrics

Whitelist = Sequence[str] | Callable[[str, torch.nn.Parameter], bool] | None


class _ParametersHandler:
    """Picks the parameters of ``model`` to log (see the module doc)."""

    def __init__(self, model: torch.nn.Module, tag: str | None = None, whitelist: Whitelist = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if tag is not None and not isinstance(tag, str):
            raise TypeError(f"tag must be a string or None, got {tag!r}")
        self.model = model
        self.tag = tag
        if whitelist is None:
            weights = list(model.named_parameters())
        elif callable(whitelist):
            weights = [(n, p) for n, p in model.named_parameters() if whitelist(n, p)]
        elif isinstance(whitelist, Sequence) and not isinstance(whitelist, str):
            prefixes = tuple(whitelist)
            weights = [(n, p) for n, p in model.named_parameters() if n.startswith(prefixes)]
        else:
            raise TypeError(
                f"whitelist must be a list of name prefixes or callable(name, parameter), got {whitelist!r}"
            )
        self.weights: tuple[tuple[str, torch.nn.Parameter], ...] = tuple(weights)

    def _prefix(self) -> str:
        return f"{self.tag}/" if self.tag else ""


class _ScalarHandler(_ParametersHandler):
    kind = ""  # "weights" or "grads"

    def __init__(
        self,
        model: torch.nn.Module,
        reduction: Callable[[torch.Tensor], float | torch.Tensor] = torch.norm,
        tag: str | None = None,
        whitelist: Whitelist = None,
    ) -> None:
        super().__init__(model, tag, whitelist)
        if not callable(reduction):
            raise TypeError(f"reduction must be callable(tensor) -> scalar, got {reduction!r}")
        probe = reduction(torch.ones(4, 2))
        if not (isinstance(probe, numbers.Number) or (isinstance(probe, torch.Tensor) and probe.ndim == 0)):
            raise TypeError(f"reduction must return a number or a 0-d tensor, got {type(probe).__name__}")
        self.reduction = reduction

    def _tensor(self, p: torch.nn.Parameter) -> torch.Tensor | None:
        raise NotImplementedError

    def __call__(self, engine: Any, logger: Any, event_name: Any) -> None:
        name = f"{self._prefix()}{self.kind}_{getattr(self.reduction, '__name__', 'reduction')}"
        values = {}
        with torch.no_grad():
            for param_name, p in self.weights:
                t = self._tensor(p)
                if t is not None:
                    value = self.reduction(t)
                    values[f"{name}/{param_name.replace('.', '/')}"] = (
                        value.detach() if isinstance(value, torch.Tensor) else value
                    )
        if values:
            send_metrics([logger], values, event_step(engine, event_name))


class WeightsScalarHandler(_ScalarHandler):
    """Log ``reduction(parameter)`` (default: the norm) of each parameter as ``[tag/]weights_<reduction>/<name>``."""

    kind = "weights"

    def _tensor(self, p: torch.nn.Parameter) -> torch.Tensor | None:
        return p.data


class GradsScalarHandler(_ScalarHandler):
    """Log ``reduction(gradient)`` (default: the norm) of each parameter as ``[tag/]grads_<reduction>/<name>``."""

    kind = "grads"

    def _tensor(self, p: torch.nn.Parameter) -> torch.Tensor | None:
        return p.grad


class _HistHandler(_ParametersHandler):
    kind = ""

    def _tensor(self, p: torch.nn.Parameter) -> torch.Tensor | None:
        raise NotImplementedError

    def __call__(self, engine: Any, logger: Any, event_name: Any) -> None:
        writer = getattr(logger, "writer", None)
        if not callable(getattr(writer, "add_histogram", None)):
            raise RuntimeError(
                f"{type(self).__name__} writes histograms: it needs a TensorBoard logger, got {type(logger).__name__}"
            )
        step = event_step(engine, event_name)
        for param_name, p in self.weights:
            t = self._tensor(p)
            if t is None:
                continue
            values = t.detach()
            if values.dtype in (torch.float16, torch.bfloat16):
                values = values.float()
            writer.add_histogram(
                tag=f"{self._prefix()}{self.kind}/{param_name.replace('.', '/')}", values=values.cpu(), global_step=step
            )


class WeightsHistHandler(_HistHandler):
    """Write a histogram of each parameter's values as ``[tag/]weights/<name>`` (TensorBoard)."""

    kind = "weights"

    def _tensor(self, p: torch.nn.Parameter) -> torch.Tensor | None:
        return p.data


class GradsHistHandler(_HistHandler):
    """Write a histogram of each parameter's gradient as ``[tag/]grads/<name>`` (TensorBoard)."""

    kind = "grads"

    def _tensor(self, p: torch.nn.Parameter) -> torch.Tensor | None:
        return p.grad
