"""When an attached metric resets, updates and computes: Ignite's ``MetricUsage`` objects.

``metric.attach(engine, name, usage=...)`` takes one of these (or its ``usage_name``)::

    usage                          reset (STARTED)    update (ITERATION_COMPLETED)   compute (COMPLETED)
    EpochWise()  "epoch_wise"      EPOCH_STARTED      ITERATION_COMPLETED            EPOCH_COMPLETED
    RunningEpochWise()             STARTED            EPOCH_COMPLETED                EPOCH_COMPLETED
    BatchWise()  "batch_wise"      ITERATION_STARTED  ITERATION_COMPLETED            ITERATION_COMPLETED
    RunningBatchWise()             STARTED            ITERATION_COMPLETED            ITERATION_COMPLETED
    SingleEpochRunningBatchWise()  EPOCH_STARTED      ITERATION_COMPLETED            ITERATION_COMPLETED
    BatchFiltered(every=10)        EPOCH_STARTED      ITERATION_COMPLETED(every=10)  EPOCH_COMPLETED

The running usages are meant for :class:`~ember.metrics.RunningAverage`, which averages its source
over the updates; any metric accepts any usage.
"""

from __future__ import annotations

from typing import Any

from ember.engine.events import Events


class MetricUsage:
    """The three events of an attached metric: ``STARTED`` (reset), ``ITERATION_COMPLETED``
    (update, may be filtered) and ``COMPLETED`` (compute into ``engine.state.metrics``)."""

    usage_name: str = "custom"

    def __init__(self, started: Any, completed: Any, iteration_completed: Any) -> None:
        self._started = started
        self._completed = completed
        self._iteration_completed = iteration_completed

    @property
    def STARTED(self) -> Any:
        """The event at which an attached metric is reset (``Metric.started``)."""
        return self._started

    @property
    def COMPLETED(self) -> Any:
        """The event at which an attached metric computes into ``engine.state.metrics`` (``Metric.completed``)."""
        return self._completed

    @property
    def ITERATION_COMPLETED(self) -> Any:
        """The (possibly filtered) event at which an attached metric updates (``Metric.iteration_completed``)."""
        return self._iteration_completed

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EpochWise(MetricUsage):
    """Over each epoch: reset at its start, computed at its end (the default)."""

    usage_name = "epoch_wise"

    def __init__(self) -> None:
        super().__init__(Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED)


class RunningEpochWise(EpochWise):
    """Reset when the run starts, updated and computed at each epoch's end."""

    usage_name = "running_epoch_wise"

    def __init__(self) -> None:
        MetricUsage.__init__(self, Events.STARTED, Events.EPOCH_COMPLETED, Events.EPOCH_COMPLETED)


class BatchWise(MetricUsage):
    """Over each iteration: reset before it, computed after it."""

    usage_name = "batch_wise"

    def __init__(self) -> None:
        super().__init__(Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED)


class RunningBatchWise(BatchWise):
    """Reset when the run starts, updated and computed after every iteration."""

    usage_name = "running_batch_wise"

    def __init__(self) -> None:
        MetricUsage.__init__(self, Events.STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED)


class SingleEpochRunningBatchWise(BatchWise):
    """Reset at each epoch's start, updated and computed after every iteration."""

    usage_name = "single_epoch_running_batch_wise"

    def __init__(self) -> None:
        MetricUsage.__init__(self, Events.EPOCH_STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED)


class BatchFiltered(MetricUsage):
    """Epoch-wise, updated only at the iterations the filter lets through
    (``BatchFiltered(every=10)`` takes the same arguments as ``Events.ITERATION_COMPLETED(...)``)."""

    usage_name = "batch_filtered"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED(*args, **kwargs))


_BY_NAME = {
    u.usage_name: u for u in (EpochWise, RunningEpochWise, BatchWise, RunningBatchWise, SingleEpochRunningBatchWise)
}


def check_usage(usage: str | MetricUsage) -> MetricUsage:
    """``usage`` as a :class:`MetricUsage`; a name is one of ``EpochWise.usage_name``, ...."""
    if isinstance(usage, MetricUsage):
        return usage
    if isinstance(usage, str):
        if usage in _BY_NAME:
            return _BY_NAME[usage]()
        raise ValueError(f"usage={usage!r} is not supported; choose one of {sorted(_BY_NAME)} or a MetricUsage")
    raise TypeError(f"usage must be a MetricUsage or its name, got {type(usage).__name__}")
