"""``Timer``: measure time between events (Ignite's API)."""

from __future__ import annotations

import time
from typing import Any

from ember.engine import Events


class Timer:
    """Wall-clock timer driven by engine events.

    ``attach(engine, start=STARTED, pause=COMPLETED, resume=, step=)`` resets at ``start``, pauses at ``pause``,
    resumes at ``resume`` and counts a step at ``step``; ``value()`` is the elapsed seconds, or per
    step with ``average=True``::

        t = Timer(average=True).attach(engine, start=Events.EPOCH_STARTED, resume=Events.ITERATION_STARTED,
                                       pause=Events.ITERATION_COMPLETED, step=Events.ITERATION_COMPLETED)
    """

    def __init__(self, average: bool = False) -> None:
        self._average = average
        self.reset()

    def attach(
        self,
        engine: Any,
        start: Any = Events.STARTED,
        pause: Any = Events.COMPLETED,
        resume: Any = None,
        step: Any = None,
    ) -> Timer:
        """Register the timer's handlers on ``engine``; returns the timer, so it can be built and attached
        in one line.

        Args:
            engine: the engine whose events drive the timer.
            start: the event that resets the timer (and starts the clock).
            pause: the event that stops the clock (None: never; the default stops it when the run completes).
            resume: the event that restarts a paused clock (None: never).
            step: the event that counts one step, the divisor of ``value()`` with ``average=True`` (None: never).
        """
        engine.add_event_handler(start, self.reset)
        if pause is not None:  # as in Ignite, the default stops the clock when the run completes
            engine.add_event_handler(pause, self.pause)
        if resume is not None:
            engine.add_event_handler(resume, self.resume)
        if step is not None:
            engine.add_event_handler(step, self.step)
        return self

    def reset(self, *args: Any) -> Timer:
        """Zero the elapsed time and the step count and start the clock (any handler arguments are ignored)."""
        self._t0 = time.perf_counter()
        self.total = 0.0
        self.step_count = 0.0
        self.running = True
        return self

    def pause(self, *args: Any) -> None:
        """Stop the clock, adding the time since it last started to the total (no-op when paused)."""
        if self.running:
            self.total += time.perf_counter() - self._t0
            self.running = False

    def resume(self, *args: Any) -> None:
        """Restart a paused clock (no-op when it is running)."""
        if not self.running:
            self.running = True
            self._t0 = time.perf_counter()

    def step(self, *args: Any) -> None:
        """Count one step (the divisor of :meth:`value` with ``average=True``)."""
        self.step_count += 1.0

    def value(self) -> float:
        """Seconds the clock has run since the last reset, including the current stretch when running;
        with ``average=True``, divided by the step count (by 1 before the first step)."""
        total = self.total + (time.perf_counter() - self._t0 if self.running else 0.0)
        return total / max(self.step_count, 1.0) if self._average else total
