"""The loop of an :class:`~ember.engine.Engine` run: the epochs and iterations, the events fired
between them, and the check points where terminate / terminate_epoch / interrupt act (the map of
all of it opens :mod:`ember.engine.engine`).

:class:`EventLoop` is the engine's base: it owns the run's position (in an epoch, in an iteration
paused by ``interrupt()``) and the requests; :class:`~ember.engine.Engine` adds the public API
(handlers, data, state dicts, ``run()``).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ember.engine.events import Events
from ember.engine.progress import run_is_done
from ember.engine.registry import HandlerList, HandlerTable
from ember.engine.state import State

# where an interrupted iteration continues: before GET_BATCH_STARTED, after it (fetch the batch),
# after GET_BATCH_COMPLETED (count the iteration), after ITERATION_STARTED (process), after
# ITERATION_COMPLETED (end of the iteration)
_TOP, _FETCH, _COUNT, _PROCESS, _END = range(5)
_NO_HANDLERS = HandlerList()  # the GET_BATCH_* events of a run without data


class _Terminate(Exception):
    """terminate() acts at a check point."""


class _EndEpoch(Exception):
    """terminate_epoch() acts at a check point."""


class _Interrupt(Exception):
    """interrupt() acted at a check point: run() returns."""



class EventLoop:
    """Runs the epochs of a run and fires their events; see :mod:`ember.engine.engine` for the map."""

    def __init__(self) -> None:
        self.state = State()
        self.last_event_name: Any = None
        self._process_function: Callable[[Any, Any], Any] | None = None
        self._handlers = HandlerTable()
        self._flag = False  # any of terminate / terminate_epoch / interrupt was asked for
        self._should_terminate: bool | str = False
        self._should_terminate_single_epoch: bool | str = False
        self._should_interrupt = False
        self._data_iter: Iterator | None = None
        self._running = False  # inside a run (an interrupted one included)
        self._in_epoch = False
        self._resume_at = (_TOP, False)  # where an interrupted iteration continues, and whether the data restarted
        self._start_offset = 0  # iterations already done in the next epoch this run starts
        self._t0 = self._epoch_t0 = 0.0

    def _fire(self, key: str, event: Any, *event_args: Any) -> None:
        counts = self._handlers.fire_counts
        counts[key] = counts.get(key, 0) + 1
        self.last_event_name = event
        for call in self._handlers[key].calls:
            call(self, *event_args)

    # ------------------------------------------------------------------ control

    def terminate(self, skip_completed: bool = False) -> None:
        """Stop the run at the next check point; fires TERMINATE, then COMPLETED unless skipped."""
        self._should_terminate = "skip_completed" if skip_completed else True
        self._flag = True

    def terminate_epoch(self, skip_epoch_completed: bool = False) -> None:
        """End the current epoch at the next check point; fires TERMINATE_SINGLE_EPOCH, then
        EPOCH_COMPLETED unless skipped."""
        self._should_terminate_single_epoch = "skip_epoch_completed" if skip_epoch_completed else True
        self._flag = True

    def interrupt(self) -> None:
        """Pause the run at the next check point; ``run()`` again continues where it stopped."""
        self._should_interrupt = True
        self._flag = True

    @property
    def should_terminate(self) -> bool | str:
        """``True`` (or ``"skip_completed"``) once the run was asked to stop; stays set after it."""
        return self._should_terminate

    @should_terminate.setter
    def should_terminate(self, value: bool | str) -> None:
        self._should_terminate = value
        self._refresh_flag()

    @property
    def should_terminate_single_epoch(self) -> bool | str:
        return self._should_terminate_single_epoch

    @should_terminate_single_epoch.setter
    def should_terminate_single_epoch(self, value: bool | str) -> None:
        self._should_terminate_single_epoch = value
        self._refresh_flag()

    @property
    def should_interrupt(self) -> bool:
        return self._should_interrupt

    @should_interrupt.setter
    def should_interrupt(self, value: bool) -> None:
        self._should_interrupt = bool(value)
        self._refresh_flag()

    def _refresh_flag(self) -> None:
        self._flag = bool(self._should_terminate or self._should_terminate_single_epoch or self._should_interrupt)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        """The epoch loop of the module docstring's map; returns early when interrupted."""
        s = self.state
        try:
            if not self._running:
                self._running = True
                self._should_terminate = self._should_terminate_single_epoch = self._should_interrupt = False
                self._flag = False
                s.times["EPOCH_COMPLETED"] = s.times["COMPLETED"] = 0.0
                self._t0 = time.perf_counter()
                self._fire("STARTED", Events.STARTED)
                if self._flag:
                    self._check(_TOP)
            while self._in_epoch or not (run_is_done(s) or self._should_terminate):
                try:
                    if not self._in_epoch:
                        self._start_epoch()
                        if self._flag:
                            self._check(_TOP)
                    if self._data_iter is None and self._resume_at[0] == _TOP:
                        self._setup_engine()
                    self._run_epoch()
                except _EndEpoch:
                    self._end_epoch_early()
                self._complete_epoch()
                if self._flag:
                    self._check(_TOP)
        except _Interrupt:
            return
        except _Terminate:
            self._in_epoch = False
            self._fire("TERMINATE", Events.TERMINATE)
        except _EndEpoch:
            raise RuntimeError("terminate_epoch() was called at STARTED, outside any epoch") from None
        self._finish_run()

    def _check(self, stage: int, restarted: bool = False) -> None:
        """A check point (see the module docstring): act on terminate / terminate_epoch / interrupt."""
        if self._should_terminate:
            raise _Terminate
        if self._should_terminate_single_epoch:
            raise _EndEpoch
        if self._should_interrupt:
            self._should_interrupt = False
            self._refresh_flag()
            self._resume_at = (stage, restarted)
            self._fire("INTERRUPT", Events.INTERRUPT)
            raise _Interrupt

    def _start_epoch(self) -> None:
        """Begin the next epoch (at a continued run's position, if any) and fire EPOCH_STARTED."""
        s = self.state
        s.epoch += 1
        self._in_epoch = True
        s.epoch_iteration, self._start_offset = self._start_offset, 0
        self._resume_at = (_TOP, False)
        self._epoch_t0 = time.perf_counter()
        self._fire("EPOCH_STARTED", Events.EPOCH_STARTED)

    def _setup_engine(self) -> None:
        """Open the data when an epoch starts without an iterator (the first one of a run, or after
        set_data()); :class:`~ember.engine.deterministic.DeterministicEngine` overrides it."""
        self._data_iter = self._iter_data()

    def _iter_data(self) -> Iterator:
        """A fresh iterator over the run's data (``epoch_length`` Nones for a run without data)."""
        s = self.state
        if s.dataloader is None:
            return itertools.repeat(None, s.epoch_length or 0)
        return iter(s.dataloader)

    def _end_epoch_early(self) -> None:
        """terminate_epoch(): fire TERMINATE_SINGLE_EPOCH; the next epoch starts from the start of the data."""
        self._resume_at = (_TOP, False)
        self._fire("TERMINATE_SINGLE_EPOCH", Events.TERMINATE_SINGLE_EPOCH, self.state.epoch_iteration)
        self._data_iter = self._data_after_cut()

    def _data_after_cut(self) -> Iterator | None:
        """The data iterator after terminate_epoch(): none yet, so it opens when the next epoch
        starts (the Trainer swaps its per-epoch data there, and a DataLoader is not opened twice);
        :class:`~ember.engine.deterministic.DeterministicEngine` opens it at once, as Ignite does."""
        return None

    def _complete_epoch(self) -> None:
        """Fire EPOCH_COMPLETED (unless terminate_epoch skipped it); ``times`` holds the epoch's duration."""
        times = self.state.times
        self._in_epoch = False
        times["EPOCH_COMPLETED"] = time.perf_counter() - self._epoch_t0
        if self._should_terminate_single_epoch != "skip_epoch_completed":
            self._fire("EPOCH_COMPLETED", Events.EPOCH_COMPLETED)
            times["EPOCH_COMPLETED"] = time.perf_counter() - self._epoch_t0
        # a terminate_epoch() from here on has no epoch to end (as in Ignite)
        self._should_terminate_single_epoch = False
        self._refresh_flag()

    def _finish_run(self) -> None:
        """Fire COMPLETED (unless terminate(skip_completed=True)) and end the run."""
        times = self.state.times
        self._running = self._in_epoch = False
        self._data_iter = None
        times["COMPLETED"] = time.perf_counter() - self._t0
        if self._should_terminate != "skip_completed":
            self._fire("COMPLETED", Events.COMPLETED)
            times["COMPLETED"] = time.perf_counter() - self._t0

    def _run_epoch(self) -> None:
        """Run the iterations of an epoch (from where an interrupt left it); check points raise.

        This is the hot loop: per iteration it calls only ``next(data)``, the process function and
        the handlers; everything else (data ending, requests of handlers) is on slower paths.
        """
        s = self.state
        handlers = self._handlers
        with_data = s.dataloader is not None
        get_started = handlers["GET_BATCH_STARTED"] if with_data else _NO_HANDLERS
        get_completed = handlers["GET_BATCH_COMPLETED"] if with_data else _NO_HANDLERS
        it_started = handlers["ITERATION_STARTED"]
        it_completed = handlers["ITERATION_COMPLETED"]
        process = self._process_function
        epoch_length = s.epoch_length
        max_iters = s.max_iters
        n = s.epoch_iteration
        stage, restarted = self._resume_at
        self._resume_at = (_TOP, False)
        while True:
            if stage < _FETCH:
                s.batch = None
                if not restarted:
                    calls = get_started.calls
                    if calls:
                        self.last_event_name = Events.GET_BATCH_STARTED
                        for call in calls:
                            call(self)
                    if self._flag:
                        self._check(_FETCH)
            if stage < _COUNT:
                # read each time: set_data() (from any handler) drops the iterator to swap the data now
                data_iter = self._data_iter
                if data_iter is None:
                    data_iter = self._data_iter = self._iter_data()
                try:
                    s.batch = next(data_iter)
                except StopIteration:
                    if self._data_ran_out(n, restarted, epoch_length, with_data):
                        return
                    stage, restarted = _FETCH, True
                    if self._flag:
                        self._check(_FETCH, True)
                    continue
                restarted = False
                s.output = None
                calls = get_completed.calls
                if calls:
                    self.last_event_name = Events.GET_BATCH_COMPLETED
                    for call in calls:
                        call(self)
                if self._flag:
                    self._check(_COUNT)
            if stage < _PROCESS:
                n += 1
                s.epoch_iteration = n
                s.iteration += 1
                calls = it_started.calls
                if calls:
                    self.last_event_name = Events.ITERATION_STARTED
                    for call in calls:
                        call(self)
                if self._flag:
                    self._check(_PROCESS)
            if stage < _END:
                s.output = process(self, s.batch)  # handlers may replace state.batch (Ignite does the same)
                calls = it_completed.calls
                if calls:
                    self.last_event_name = Events.ITERATION_COMPLETED
                    for call in calls:
                        call(self)
                if self._flag:
                    self._check(_END)
            stage = _TOP
            if n == epoch_length:
                return
            if max_iters is not None and s.iteration == max_iters:
                self._should_terminate = self._flag = True
                raise _Terminate

    def _data_ran_out(self, n: int, restarted: bool, epoch_length: int | None, with_data: bool) -> bool:
        """The data stopped after ``n`` batches of this epoch: True when that ends the epoch (data
        without a known length defines it; data that fails again right after a restart ends the
        epoch with a warning); False after firing DATALOADER_STOP_ITERATION (the data restarts at
        the next fetch)."""
        s = self.state
        if epoch_length is None:  # the data defines the epoch
            if n == 0:
                raise ValueError("data yielded no batch: the epoch would be empty")
            s.epoch_length = n
            if s.max_iters is not None:
                s.max_epochs = math.ceil(s.max_iters / n)
            return True
        if restarted:
            if not run_is_done(s):
                warnings.warn(
                    f"data ran out at iteration {s.iteration} and gives no more batches, before the run's end "
                    f"(epoch_length={epoch_length}, max_epochs={s.max_epochs}, max_iters={s.max_iters})",
                    stacklevel=5,
                )
            return True
        if with_data:
            self._fire("DATALOADER_STOP_ITERATION", Events.DATALOADER_STOP_ITERATION)
        self._data_iter = None
        return False
