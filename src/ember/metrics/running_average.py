"""``RunningAverage``: an exponential moving average of a metric or of the engine output (Ignite's)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ember.distributed import comms
from ember.engine.events import Events, Priority
from ember.metrics.metric import Metric, NotComputableError
from ember.metrics.usage import MetricUsage, RunningBatchWise, SingleEpochRunningBatchWise, check_usage


class RunningAverage(Metric):
    """``value = alpha * value + (1 - alpha) * x`` at each update (the first ``x`` as is), where ``x``
    is ``src``'s value since the last update (then ``src`` is reset), or
    ``output_transform(engine.state.output)`` (a number or a tensor, averaged over the processes).

    Attached, it follows its usage (:mod:`ember.metrics.usage`): ``RunningBatchWise()`` (the default)
    resets when the run starts and updates and stores its value after every iteration;
    ``SingleEpochRunningBatchWise()`` resets at every epoch start; ``RunningEpochWise()`` updates at
    every epoch end (``src`` accumulates over the epoch). ``src`` itself is updated after every
    iteration. The value is stored in ``engine.state.metrics[name]`` as Ignite does: a 0-d tensor as a
    Python number (reading it on the host: attach with a coarser usage where a per-step sync matters).
    Example::

        RunningAverage(output_transform=lambda loss: loss).attach(trainer, "running_loss")
        RunningAverage(Accuracy(), alpha=0.9).attach(trainer, "running_acc")

    ``epoch_bound`` is Ignite's older spelling of the usage (True: single epoch, False: the whole run).
    """

    required_output_keys = None

    def __init__(
        self,
        src: Metric | None = None,
        alpha: float = 0.98,
        output_transform: Callable | None = None,
        epoch_bound: bool | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        if src is not None and not isinstance(src, Metric):
            raise TypeError(f"src must be an ember.metrics.Metric or None, got {type(src).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}")
        if src is not None:
            if output_transform is not None:
                raise ValueError("RunningAverage needs exactly one of src (a metric) and output_transform, got both")
            if device is not None:
                raise ValueError("device goes to the src metric, not to RunningAverage(src)")
            device = src.device
        elif output_transform is None:
            raise ValueError("RunningAverage needs exactly one of src (a metric) and output_transform, got neither")
        if epoch_bound is not None:
            warnings.warn(
                "epoch_bound is deprecated: attach with usage=SingleEpochRunningBatchWise() (epoch_bound=True) "
                "or RunningBatchWise() (False) instead",
                DeprecationWarning,
                stacklevel=2,
            )
        self.src = src
        self.alpha = float(alpha)
        self.epoch_bound = epoch_bound
        super().__init__(None, output_transform, device, skip_unrolling)

    def reset(self) -> None:
        """Forget the average (the next update starts it afresh) and reset ``src``."""
        self._value: Any = None
        self._updates = 0
        if self.src is not None:
            self.src.reset()

    def update(self, output: Any) -> None:
        """Fold one value into the average: ``src.compute()`` (then ``src`` is reset), or ``output``.

        Args:
            output: with no ``src``, a number or a tensor (detached; averaged over the processes when
                running distributed); ignored when there is a ``src``.
        """
        if self.src is not None:
            x = self.src.compute()
            self.src.reset()
        else:
            if isinstance(output, torch.Tensor):
                output = output.detach()
                if self._device is not None:
                    output = output.to(self._device)
            elif not isinstance(output, numbers.Number):
                raise TypeError(f"RunningAverage: the output must be a number or a tensor, got {type(output).__name__}")
            world = comms.get_world_size()
            if world > 1:  # a copy: the collective works in place
                output = comms.all_reduce(output.clone() if isinstance(output, torch.Tensor) else output) / world
            x = output
        self._value = x if self._value is None else self._value * self.alpha + (1.0 - self.alpha) * x
        self._updates += 1

    def compute(self) -> Any:
        """The current average, as a number or a tensor (no host read here).

        Raises:
            NotComputableError: when there was no update since the last reset.
        """
        if self._value is None:
            raise NotComputableError("RunningAverage must have at least one update before it can be computed")
        return self._value

    def iteration_completed(self, engine: Any) -> None:
        """The handler of the usage's update event: fold ``src``'s value in (the engine output is not
        read), or the transformed ``engine.state.output``."""
        if self.src is not None:  # the value comes from src: the engine output is not read (Ignite reads it, and
            self.update(None)  # raises on a dict output)
        else:
            super().iteration_completed(engine)

    def _usage(self, usage: str | MetricUsage) -> MetricUsage:
        if self.epoch_bound is not None:
            return SingleEpochRunningBatchWise() if self.epoch_bound else RunningBatchWise()
        return check_usage(usage)

    def attach(self, engine: Any, name: str, usage: str | MetricUsage = RunningBatchWise()) -> None:  # noqa: B008
        """Compute into ``engine.state.metrics[name]`` at ``usage``'s events (``epoch_bound``, when given,
        chooses the usage); ``src`` is also updated after every iteration."""
        usage = self._usage(usage)
        if self.src is not None and not engine.has_event_handler(
            self.src.iteration_completed, Events.ITERATION_COMPLETED
        ):
            engine.add_event_handler(
                Events.ITERATION_COMPLETED, self.src.iteration_completed, priority=Priority.METRICS
            )
        super().attach(engine, name, usage)

    def detach(self, engine: Any, usage: str | MetricUsage = RunningBatchWise()) -> None:  # noqa: B008
        """Remove this average's handlers, and ``src``'s per-iteration update, from ``engine``."""
        usage = self._usage(usage)
        if self.src is not None and engine.has_event_handler(self.src.iteration_completed, Events.ITERATION_COMPLETED):
            engine.remove_event_handler(self.src.iteration_completed, Events.ITERATION_COMPLETED)
        super().detach(engine, usage)

    def is_attached(self, engine: Any, usage: str | MetricUsage = RunningBatchWise()) -> bool:  # noqa: B008
        """Whether this average computes on ``engine`` at ``usage``'s ``COMPLETED`` event."""
        return super().is_attached(engine, self._usage(usage))
