"""The event loop under everything in Ember: an :class:`Engine` runs a process function over data.

Where each event fires in ``engine.run(data, max_epochs, max_iters, epoch_length)``::

    fire STARTED
    while the run is not done (max_epochs / max_iters / epoch_length) and not terminated:
        epoch += 1; fire EPOCH_STARTED
        repeat epoch_length times (until the data ends when the length is unknown):
            fire GET_BATCH_STARTED
            batch = next(data)          # data ran out but the epoch is not over:
                                        #   fire DATALOADER_STOP_ITERATION, restart iter(data)
            fire GET_BATCH_COMPLETED
            iteration += 1; fire ITERATION_STARTED
            state.output = process_function(engine, batch)
            fire ITERATION_COMPLETED
        fire EPOCH_COMPLETED
    fire COMPLETED

    terminate()        checked after STARTED, EPOCH_STARTED, ITERATION_STARTED (the batch is not
                       processed), ITERATION_COMPLETED and EPOCH_COMPLETED: the loop stops there
                       (the current epoch's EPOCH_COMPLETED is not fired), then TERMINATE and
                       COMPLETED (COMPLETED is skipped with ``terminate(skip_completed=True)``).
    terminate_epoch()  checked at the same places inside an epoch: fire TERMINATE_SINGLE_EPOCH,
                       then EPOCH_COMPLETED, and the next epoch starts from the start of the data.
    interrupt()        at the next check point after a complete iteration (or epoch boundary):
                       fire INTERRUPT and return from run(); calling run() again continues
                       exactly there, without firing STARTED again.
    an exception       with EXCEPTION_RAISED handlers: they get (engine, exception) and run()
                       returns; with none, the exception propagates unchanged.

Handlers of one event run by priority (higher first, see :class:`~ember.engine.events.Priority`),
then in the order they were added. Handlers whose signature takes the engine receive it first.
The engine is compatible with Ignite's: ``Engine``, ``Events``, ``state`` (with
``state.get_event_attrib_value``), ``on``, ``add_event_handler``, ``terminate``, ``state_dict``
behave as in ``ignite.engine`` 0.5.

This file is the loop and the engine's API; the handler table (registration, signature checks,
filters) is :mod:`ember.engine.registry`, run bounds and saved positions :mod:`ember.engine.progress`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ember.engine.events import Events, RemovableEventHandle
from ember.engine.progress import (
    check_run_args,
    extend_bounds,
    progress_dict,
    resume_point,
    run_is_done,
    start_bounds,
)
from ember.engine.registry import HandlerTable, event_key
from ember.engine.state import State


class Engine:
    """Runs ``process_function(engine, batch)`` over data and fires :class:`Events` around it.

    Example::

        def train_step(engine, batch):
            x, y = batch
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        trainer = Engine(train_step)

        @trainer.on(Events.ITERATION_COMPLETED(every=100))
        def log(engine):
            print(engine.state.iteration, engine.state.output.item())

        trainer.run(train_loader, max_epochs=5)
    """

    def __init__(self, process_function: Callable[[Engine, Any], Any]) -> None:
        if not callable(process_function):
            raise TypeError(f"process_function must be callable(engine, batch), got {process_function!r}")
        self._process_function = process_function
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.state = State()
        self.last_event_name: Any = None
        self.state_dict_user_keys: list[str] = []
        self._handlers = HandlerTable()
        self._flag = False  # any of terminate / terminate_epoch / interrupt was asked for
        self._should_terminate: bool | str = False
        self._should_terminate_single_epoch = False
        self._should_interrupt = False
        self._data_iter: Any = None
        self._started = False  # inside a run that an interrupt() paused
        self._in_epoch = False
        self._resume_epoch_iter: int | None = None

    # ------------------------------------------------------------------ handlers

    def register_events(self, *event_names: Any, event_to_attr: Mapping[Any, str] | None = None) -> None:
        """Allow custom events (``EventEnum`` members or strings) to be handled and fired.

        ``event_to_attr`` maps an event to the ``state`` attribute its filters count by (it goes into
        ``state.event_to_attr``, and the attribute starts at 0 unless the state has it already, as in
        Ignite); without it, filters count how many times the event has been fired.
        """
        for attr in (event_to_attr or {}).values():
            if not isinstance(attr, str):
                raise TypeError(f"event_to_attr values must be state attribute names, got {attr!r}")
        for event in event_names:
            self._handlers.register(event)
        for event, attr in (event_to_attr or {}).items():
            self.state.event_to_attr[event_key(event)] = attr
            if not hasattr(self.state, attr):
                setattr(self.state, attr, 0)

    def add_event_handler(
        self, event_name: Any, handler: Callable, *args: Any, priority: int | None = None, **kwargs: Any
    ) -> RemovableEventHandle:
        """Call ``handler`` whenever ``event_name`` fires (filtered events and ``|`` lists allowed).

        ``args``/``kwargs`` are passed to the handler after the engine (when its signature takes
        the engine) and after the event's own arguments (the exception, for EXCEPTION_RAISED).
        ``priority`` (keyword only; default: the handler's ``priority`` attribute, else 0) orders
        handlers of one event, higher first. Returns a handle whose ``remove()`` detaches it.
        """
        return self._handlers.add(self, event_name, handler, args, kwargs, priority, self.state.event_to_attr)

    def on(self, event_name: Any, *args: Any, priority: int | None = None, **kwargs: Any) -> Callable:
        """Decorator form of :meth:`add_event_handler`."""

        def decorator(handler: Callable) -> Callable:
            self.add_event_handler(event_name, handler, *args, priority=priority, **kwargs)
            return handler

        return decorator

    def has_event_handler(self, handler: Callable, event_name: Any = None) -> bool:
        """Whether ``handler`` is attached (to ``event_name``, or to any event)."""
        return self._handlers.has(handler, event_name)

    def remove_event_handler(self, handler: Callable, event_name: Any) -> None:
        """Detach ``handler`` from ``event_name``; raises ``ValueError`` if it was not attached."""
        self._handlers.remove_handler(handler, event_name)

    def fire_event(self, event_name: Any, *event_args: Any) -> None:
        """Fire a (registered custom) event now, calling its handlers."""
        key = event_key(event_name)
        if key not in self._handlers:
            raise ValueError(f"unknown event {event_name!r}: register it with engine.register_events() first")
        self._fire(key, event_name, *event_args)

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

    def terminate_epoch(self) -> None:
        """End the current epoch at the next check point; fires TERMINATE_SINGLE_EPOCH."""
        self._should_terminate_single_epoch = True
        self._flag = True

    def interrupt(self) -> None:
        """Pause the run after the current iteration; ``run()`` again continues where it stopped."""
        self._should_interrupt = True
        self._flag = True

    @property
    def should_terminate(self) -> bool:
        return bool(self._should_terminate)

    @should_terminate.setter
    def should_terminate(self, value: bool) -> None:
        self._should_terminate = bool(value)
        self._flag = self._flag or bool(value)

    @property
    def should_terminate_single_epoch(self) -> bool:
        return self._should_terminate_single_epoch

    @should_terminate_single_epoch.setter
    def should_terminate_single_epoch(self, value: bool) -> None:
        self._should_terminate_single_epoch = bool(value)
        self._flag = self._flag or bool(value)

    @property
    def should_interrupt(self) -> bool:
        return self._should_interrupt

    @property
    def process_function(self) -> Callable[[Engine, Any], Any]:
        """What runs on each batch; replaceable between runs (the Trainer builds its own per run)."""
        return self._process_function

    @process_function.setter
    def process_function(self, fn: Callable[[Engine, Any], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"process_function must be callable(engine, batch), got {fn!r}")
        self._process_function = fn

    def set_data(self, data: Iterable) -> None:
        """Swap the data of a run in progress; the next batch comes from the new data."""
        if not isinstance(data, Iterable):
            raise TypeError(f"data must be iterable, got {type(data).__name__}")
        self.state.dataloader = data
        self._data_iter = None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Progress as plain values: ``iteration``, ``epoch``, ``epoch_length``, ``max_epochs``,
        ``max_iters``, ``epoch_iteration`` and the state attributes named in ``state_dict_user_keys``."""
        epoch_iteration = self.state.epoch_iteration if self._in_epoch else 0
        return progress_dict(self.state, epoch_iteration, self.state_dict_user_keys)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from saved progress: the next ``run()`` resumes at that iteration/epoch.

        Needs ``iteration`` or ``epoch``; with only ``epoch``, iteration is epoch * epoch_length.
        A mid-epoch iteration resumes inside that epoch (feeding the right data is the caller's job):
        with ``epoch_iteration`` (what :meth:`state_dict` writes) exactly there, even when epochs
        were cut short or have no fixed length; without it, at ``iteration % epoch_length``.
        """
        # validated completely before touching the state: a rejected dict leaves the engine as it was
        point = resume_point(state_dict, self.state_dict_user_keys)
        s = self.state
        s.iteration, s.epoch, s.epoch_length = point.iteration, point.epoch, point.epoch_length
        s.max_epochs, s.max_iters = point.max_epochs, point.max_iters
        for k, v in point.user_values.items():
            setattr(s, k, v)
        s.epoch_iteration = 0  # until the epoch starts again at its saved position
        self._resume_epoch_iter = point.epoch_iteration
        self._started = False
        self._in_epoch = False
        self._data_iter = None

    # ------------------------------------------------------------------ run

    def run(
        self,
        data: Iterable | None = None,
        max_epochs: int | None = None,
        max_iters: int | None = None,
        epoch_length: int | None = None,
    ) -> State:
        """Run over ``data`` (see the module docstring for the event map) and return ``state``.

        A fresh run starts when the engine has never run, its last run is done, or
        ``state.max_epochs`` (and ``state.max_iters``) were set to ``None``; otherwise (after
        ``interrupt()``, ``terminate()`` or ``load_state_dict()``) it continues, and a larger
        ``max_epochs`` extends it.
        """
        check_run_args(data, max_epochs, max_iters, epoch_length)
        s = self.state
        # never run, or Ignite's way to restart an unfinished run: `state.max_epochs = None`
        unset = s.max_epochs is None and s.max_iters is None
        if self._started and not unset:
            self._prepare_resume(data, max_epochs, max_iters)
        elif unset or (self._resume_epoch_iter is None and run_is_done(s)):
            # (a loaded mid-epoch position is never done: it still has its epoch to finish)
            self._prepare_new_run(data, max_epochs, max_iters, epoch_length)
        else:
            self._prepare_continuation(data, max_epochs, max_iters, epoch_length)
        self._should_terminate = False
        self._should_terminate_single_epoch = False
        self._flag = self._should_interrupt = False
        try:
            self._run()
        except BaseException as exc:
            self._started = self._in_epoch = False
            self._data_iter = None
            if not self._handlers["EXCEPTION_RAISED"].calls:
                raise
            self.logger.debug("engine run is terminating due to exception: %r", exc)
            self._fire("EXCEPTION_RAISED", Events.EXCEPTION_RAISED, exc)
        return self.state

    def _prepare_resume(self, data: Iterable | None, max_epochs: int | None, max_iters: int | None) -> None:
        """Continue a run that ``interrupt()`` paused, exactly where it stopped."""
        if data is not None and data is not self.state.dataloader:
            self.set_data(data)
        extend_bounds(self.state, max_epochs, max_iters)

    def _prepare_new_run(
        self, data: Iterable | None, max_epochs: int | None, max_iters: int | None, epoch_length: int | None
    ) -> None:
        """Reset the progress for a run from iteration 0."""
        if data is None:
            raise ValueError("run() needs data for a new run")
        start_bounds(self.state, data, max_epochs, max_iters, epoch_length)
        self._data_iter = None
        self._started = self._in_epoch = False
        self._resume_epoch_iter = None

    def _prepare_continuation(
        self, data: Iterable | None, max_epochs: int | None, max_iters: int | None, epoch_length: int | None
    ) -> None:
        """Continue from ``load_state_dict()`` or a terminated run, with fresh data iteration."""
        s = self.state
        if data is not None:
            s.dataloader = data
        if s.dataloader is None:
            raise ValueError("run() needs data to continue this run")
        if epoch_length is not None:
            s.epoch_length = epoch_length
        extend_bounds(s, max_epochs, max_iters)
        self._data_iter = None

    def _run(self) -> None:
        """The epoch loop of the module docstring's map; returns early when interrupted."""
        t0 = time.perf_counter()
        if not self._started:
            self._started = True
            self._fire("STARTED", Events.STARTED)
        while self._in_epoch or self._resume_epoch_iter is not None or not (run_is_done(self.state) or self._should_terminate):
            if not self._in_epoch:
                if self._should_interrupt:
                    return self._interrupt_now()
                self._start_epoch()
                if self._should_terminate:
                    break
                if self._should_interrupt:
                    return self._interrupt_now()
            if self._should_terminate_single_epoch:
                self._end_epoch_early()
            elif self._run_epoch():
                return None
            if self._should_terminate:
                break
            self._complete_epoch()
        self._finish_run(t0)
        return None

    def _start_epoch(self) -> None:
        """Begin the next epoch (at a loaded mid-epoch position, if any) and fire EPOCH_STARTED."""
        self.state.epoch += 1
        self._in_epoch = True
        self.state.epoch_iteration = self._resume_epoch_iter or 0
        self._resume_epoch_iter = None
        self._should_terminate_single_epoch = False
        self._refresh_flag()
        self._epoch_t0 = time.perf_counter()
        self._fire("EPOCH_STARTED", Events.EPOCH_STARTED)

    def _complete_epoch(self) -> None:
        """Fire EPOCH_COMPLETED; ``times`` holds the epoch's duration for its handlers and after them."""
        times = self.state.times
        self._in_epoch = False
        times["EPOCH_COMPLETED"] = time.perf_counter() - self._epoch_t0
        self._fire("EPOCH_COMPLETED", Events.EPOCH_COMPLETED)
        times["EPOCH_COMPLETED"] = time.perf_counter() - self._epoch_t0

    def _finish_run(self, t0: float) -> None:
        """Fire TERMINATE (when asked for) and COMPLETED (unless skipped), and end the run."""
        times = self.state.times
        self._in_epoch = False
        if self._should_terminate:
            self._fire("TERMINATE", Events.TERMINATE)
        self._started = False
        self._data_iter = None
        times["COMPLETED"] = time.perf_counter() - t0
        if self._should_terminate != "skip_completed":
            self._fire("COMPLETED", Events.COMPLETED)
            times["COMPLETED"] = time.perf_counter() - t0

    def _refresh_flag(self) -> None:
        self._flag = bool(self._should_terminate) or self._should_terminate_single_epoch or self._should_interrupt

    def _interrupt_now(self) -> None:
        self._should_interrupt = False
        self._refresh_flag()
        self._fire("INTERRUPT", Events.INTERRUPT)

    def _run_epoch(self) -> bool:
        """Run iterations until the epoch ends; returns True when interrupted.

        This is the hot loop: per iteration it calls only ``next(data)``, the process function and
        the handlers; everything else (data ending, stop requests) is handled on the way out.
        """
        s = self.state
        handlers = self._handlers
        get_started = handlers["GET_BATCH_STARTED"]
        get_completed = handlers["GET_BATCH_COMPLETED"]
        it_started = handlers["ITERATION_STARTED"]
        it_completed = handlers["ITERATION_COMPLETED"]
        process = self._process_function
        epoch_length = s.epoch_length
        max_iters = s.max_iters
        n = s.epoch_iteration
        restarted = False
        while epoch_length is None or n < epoch_length:
            if not restarted:
                calls = get_started.calls
                if calls:
                    self.last_event_name = Events.GET_BATCH_STARTED
                    for call in calls:
                        call(self)
            # read each time: set_data() (from any handler) drops the iterator to swap the data now
            data_iter = self._data_iter
            if data_iter is None:
                data_iter = self._data_iter = iter(s.dataloader)
            try:
                batch = next(data_iter)
            except StopIteration:
                if self._data_ran_out(n, restarted, epoch_length, max_iters):
                    return False
                restarted = True
                continue
            restarted = False
            s.batch = batch
            calls = get_completed.calls
            if calls:
                self.last_event_name = Events.GET_BATCH_COMPLETED
                for call in calls:
                    call(self)
            n += 1
            s.epoch_iteration = n
            s.iteration += 1
            calls = it_started.calls
            if calls:
                self.last_event_name = Events.ITERATION_STARTED
                for call in calls:
                    call(self)
            # checked even without ITERATION_STARTED handlers: a GET_BATCH_* handler may have asked
            if self._flag and (self._should_terminate or self._should_terminate_single_epoch):
                s.output = None
                return self._end_epoch_early()
            s.output = process(self, s.batch)  # handlers may replace state.batch (Ignite does the same)
            calls = it_completed.calls
            if calls:
                self.last_event_name = Events.ITERATION_COMPLETED
                for call in calls:
                    call(self)
            if self._flag:
                if self._should_terminate or self._should_terminate_single_epoch:
                    return self._end_epoch_early()
                if self._should_interrupt:
                    self._interrupt_now()
                    return True
            if max_iters is not None and s.iteration >= max_iters:
                break
        return False

    def _data_ran_out(self, n: int, restarted: bool, epoch_length: int | None, max_iters: int | None) -> bool:
        """The data stopped after ``n`` batches of this epoch: True when that ends the epoch (data
        without a length defines it; data that fails right after a restart ends the run with a
        warning); False after firing DATALOADER_STOP_ITERATION and restarting the data."""
        s = self.state
        if epoch_length is None:  # the data defines the epoch
            if n == 0:
                raise ValueError("data yielded no batch: the epoch would be empty")
            s.epoch_length = n
            if max_iters is not None:
                s.max_epochs = math.ceil(max_iters / n)
            self._data_iter = None
            return True
        if restarted:
            warnings.warn(
                f"data ran out at iteration {s.iteration} before the run's end "
                f"(epoch_length={epoch_length}, max_epochs={s.max_epochs}, max_iters={max_iters})",
                stacklevel=4,
            )
            self._should_terminate = self._flag = True
            return True
        self._fire("DATALOADER_STOP_ITERATION", Events.DATALOADER_STOP_ITERATION)
        self._data_iter = iter(s.dataloader)
        return False

    def _end_epoch_early(self) -> bool:
        if self._should_terminate_single_epoch:
            self._should_terminate_single_epoch = False
            self._refresh_flag()
            # the next epoch starts from the beginning of the data (as in Ignite), not mid-pass
            self._data_iter = None
            self._fire("TERMINATE_SINGLE_EPOCH", Events.TERMINATE_SINGLE_EPOCH)
        return False
