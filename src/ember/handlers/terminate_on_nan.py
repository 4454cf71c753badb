"""``TerminateOnNan``: stop a run when the process function's output holds NaN or infinity."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Any

import torch

from ember.engine.events import Priority


class TerminateOnNan:
    """Checks ``output_transform(engine.state.output)`` (numbers and tensors, nested) each call and
    terminates the engine on a non-finite value. Checking a tensor reads it on the host, so on a GPU
    this synchronises: attach it with a filter (``every=``) where that matters."""

    ember_priority = Priority.TRAINER

    def __init__(self, output_transform: Callable[[Any], Any] = lambda x: x) -> None:
        if not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {output_transform!r}")
        self.output_transform = output_transform
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    def _finite(self, value: Any) -> bool:
        if isinstance(value, torch.Tensor):
            return bool(torch.isfinite(value).all())
        if isinstance(value, numbers.Number):
            return bool(torch.isfinite(torch.tensor(float(value))))
        if isinstance(value, dict):
            return all(self._finite(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return all(self._finite(v) for v in value)
        return True

    def __call__(self, engine: Any) -> None:
        if not self._finite(self.output_transform(engine.state.output)):
            self.logger.warning("TerminateOnNan: output %r is not finite; terminating", engine.state.output)
            engine.terminate()
