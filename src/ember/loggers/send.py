"""Handing logged values to loggers: the one path from the Trainer, callbacks and Engine handlers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ember.loggers.buffer import to_host


def send_metrics(loggers: Iterable[Any], metrics: Mapping[str, Any], step: int) -> None:
    """Hand ``metrics`` at ``step`` to each of ``loggers`` (``ember.loggers.Logger`` objects): as
    they are (tensors stay tensors) to loggers that take them (``accepts_tensors``), as Python
    floats to the others, moved to the host once, in one transfer per device, however many such
    loggers there are.

    The one way values reach loggers: the Trainer's log flushes, ``LearningRateMonitor`` and the
    Engine's ``OutputHandler`` / ``OptimizerParamsHandler`` all call it.

    Example::

        send_metrics(trainer.loggers, {"lr-Adam": 1e-3}, trainer.global_step)
    """
    floats: dict[str, float] | None = None
    for logger in loggers:
        if getattr(logger, "accepts_tensors", False):
            logger.log_metrics(metrics, step)
        else:
            if floats is None:
                ((_, _, keys, values),) = to_host([(step, 0.0, tuple(metrics), tuple(metrics.values()))])
                floats = {k: float(v) for k, v in zip(keys, values)}
            logger.log_metrics(floats, step)
