"""Where a ``fit`` stands and whether it must stop: the one owner of the training loop's counters.

The Engine is the only loop; the fit handlers (:mod:`ember.trainer.fit_loop`) read and write this
object and nothing else keeps a count. Every stop rule is answered by :meth:`FitProgress.stop_reason`.
The position inside the epoch is the Engine's own (``engine.state.epoch_iteration``).
"""

from __future__ import annotations

import datetime
import math
import threading
import time
from typing import Any

#: What :meth:`FitProgress.stop_reason` answers, in the order the rules are asked.
STOP_REASONS = ("signal", "max_steps", "max_time", "should_stop", "max_epochs")


class FitProgress:
    """Global step, epoch, accumulation, limits and stop requests of one Trainer.

    The per-step handler asks :meth:`stop_reason` only once ``global_step >= ask_at_step``: that is
    max_steps while nothing else is pending, and 0 (ask now) as soon as something may require
    stopping (a stop request, a signal, the deadline passing). So a step with nothing to stop for
    costs one comparison, and every rule is decided in one place.
    """

    def __init__(
        self,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int | None = None,
        min_steps: int | None = None,
        max_time: float | None = None,
    ) -> None:
        self.max_epochs = max_epochs
        # as Lightning: min_steps alone implies min_epochs=1 (a stop asked for before training starts
        # still trains one epoch)
        self.min_epochs = min_epochs if min_epochs is not None else (1 if min_steps is not None else 0)
        self.max_steps = max_steps
        self.min_steps = min_steps or 0
        self.max_time = max_time
        self.step_limit: float = max_steps if max_steps is not None else math.inf
        self.ask_at_step: float = self.step_limit
        self.global_step = 0
        self.current_epoch = 0  # epochs completed; during an epoch, its 0-based index
        self.micro = 0  # micro-batches accumulated since the last optimizer step
        # Lightning's logging step (``_batches_that_stepped``): batches that ended an accumulation
        # window (every batch under manual optimization); ``log_step`` is its value before the last one
        self.batches_stepped = 0
        self.log_step = 0
        self.should_stop = False  # asked for by a callback or the module (min_epochs/min_steps apply)
        self.signal: str | None = None  # a stop signal received (SIGTERM, SIGUSR1, SIGINT)
        self.time_up = False  # max_time has passed (decided by the clock, or agreed by all processes)
        self.deadline = 0.0  # time.monotonic() at which max_time is up; 0: no limit
        self.clock_decides = True  # False in a distributed run: the processes agree on time_up instead
        self.epoch_cut_short = False  # the epoch was ended early to stop the run at its EPOCH_COMPLETED
        self.skip_epoch_validation = False
        self.in_epoch_end = False  # between on_train_epoch_end and the epoch schedulers' step
        # the train engine's iteration whose batch was last counted in ``batches_stepped``: a
        # checkpoint saved in that batch's ITERATION_COMPLETED before it was counted (on_train_batch_end,
        # validation) records it as counted (see :meth:`batch_end_pending`)
        self.counted_iteration = 0
        self.stopped_by: str | None = None  # the last reason stop_reason() gave (None: it never did)
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------------ starting and stopping a run

    def start(self, distributed: bool) -> None:
        """A new fit: counters from zero (a checkpoint may set them again), the clock started."""
        self.global_step = self.current_epoch = self.micro = self.batches_stepped = self.log_step = 0
        self.should_stop = self.time_up = False
        self.ask_at_step = self.step_limit
        self.signal = None
        self.epoch_cut_short = self.skip_epoch_validation = self.in_epoch_end = False
        self.counted_iteration = 0
        self.stopped_by = None
        self.clock_decides = not distributed
        self.deadline = time.monotonic() + self.max_time if self.max_time is not None else 0.0

    def start_clock(self) -> None:
        """Ask for a stop check when max_time is up (one process only: several agree on it instead)."""
        self.stop_clock()
        if self.deadline and self.clock_decides:
            self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self.ask_now)
            self._timer.daemon = True
            self._timer.start()

    def stop_clock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def ask_now(self) -> None:
        """Make the next step ask :meth:`stop_reason` (something may require stopping)."""
        self.ask_at_step = 0

    def request_stop(self, value: bool = True) -> None:
        """``trainer.should_stop = value``."""
        self.should_stop = bool(value)
        if value:
            self.ask_now()

    def on_signal(self, name: str) -> None:
        """Called from the signal handler: stop at the next safe point."""
        if self.signal is None:
            self.signal = name
        self.ask_now()

    # ------------------------------------------------------------------ the one place stop rules live

    def past_deadline(self) -> bool:
        """Whether this process's clock says max_time is up."""
        return bool(self.deadline) and time.monotonic() >= self.deadline

    def stop_reason(self, at_epoch_end: bool = False) -> str | None:
        """Must the run stop now, and why: one of :data:`STOP_REASONS`, or None to go on.

        ``signal``: a stop signal arrived (the caller saves a checkpoint and exits); ``max_steps``;
        ``max_time`` (checked against the clock in a one-process run; agreed by all processes in a
        distributed one) and ``should_stop`` (requested), both once ``min_epochs`` and ``min_steps``
        are reached; ``max_epochs`` (only ``at_epoch_end``, once ``current_epoch`` counts the epoch).
        """
        self.ask_at_step = self.step_limit  # re-armed first: a signal or the timer asking meanwhile is not lost
        reason = self._reason(at_epoch_end)
        if reason is not None:
            self.stopped_by = reason
        if reason is not None or self.should_stop:  # still pending (e.g. waiting for min_epochs)
            self.ask_now()
        return reason

    def _reason(self, at_epoch_end: bool) -> str | None:
        if self.signal is not None:
            return "signal"
        if self.global_step >= self.step_limit:
            return "max_steps"
        if self.clock_decides and not self.time_up and self.past_deadline():
            self.time_up = True
        if self.time_up:
            self.should_stop = True  # as Lightning's Timer does (not saved: see state_dict)
        if self.should_stop and self.current_epoch >= self.min_epochs and self.global_step >= self.min_steps:
            return "max_time" if self.time_up else "should_stop"  # as Lightning, both wait for the minimums
        if at_epoch_end and self.max_epochs is not None and self.current_epoch >= self.max_epochs:
            return "max_epochs"
        return None

    def describe_stop(self, should_stop_detail: str | None = None) -> str:
        """Why the run stopped, in words, from :attr:`stopped_by` (``should_stop_detail``: who asked
        for the stop and why, e.g. EarlyStopping's reason)."""
        reason = self.stopped_by
        if reason == "signal":
            return f"received {self.signal or 'a stop signal'}"
        if reason == "max_steps":
            return f"max_steps={self.max_steps} reached"
        if reason == "max_time":
            return f"max_time={datetime.timedelta(seconds=round(self.max_time or 0))} reached"
        if reason == "should_stop":
            return should_stop_detail or "trainer.should_stop was set"
        if reason == "max_epochs" or self.max_epochs == 0:
            return f"max_epochs={self.max_epochs} reached"
        return "the training loop ended"

    # ------------------------------------------------------------------ checkpoint state

    def batch_end_pending(self, iteration: int) -> bool:
        """Whether the batch at the train engine's ``iteration`` ended an optimizer window but is not
        counted in ``batches_stepped`` yet (asked while that batch's ITERATION_COMPLETED runs)."""
        return not self.micro and iteration != self.counted_iteration

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "current_epoch": self.current_epoch,
            "micro": self.micro,
            "batches_stepped": self.batches_stepped,
            "epoch_end_pending": self.in_epoch_end,
            # a run that decided to end stays ended on resume; one stopped by max_time continues (a new time budget)
            "should_stop": self.should_stop and not (self.time_up or self.past_deadline()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.current_epoch = int(state["current_epoch"])
        self.micro = int(state.get("micro", 0))
        self.batches_stepped = self.log_step = int(state.get("batches_stepped", self.global_step))
        self.request_stop(bool(state.get("should_stop", False)))
