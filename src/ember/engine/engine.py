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
The engine is compatible with Ignite's: ``Engine``, ``Events``, ``state``, ``on``,
``add_event_handler``, ``terminate``, ``state_dict`` behave as in ``ignite.engine`` 0.5.
"""

from __future__ import annotations

import bisect
import inspect
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ember.engine.events import (
    CallableEventWithFilter,
    Events,
    EventsList,
    Priority,
    RemovableEventHandle,
)
from ember.engine.state import State

_BUILTIN_ATTRS = {
    "STARTED": "epoch",
    "EPOCH_STARTED": "epoch",
    "GET_BATCH_STARTED": "iteration",
    "GET_BATCH_COMPLETED": "iteration",
    "ITERATION_STARTED": "iteration",
    "ITERATION_COMPLETED": "iteration",
    "EPOCH_COMPLETED": "epoch",
    "COMPLETED": "epoch",
}


def _event_key(event: Any) -> str:
    if isinstance(event, CallableEventWithFilter):
        return event.name
    if isinstance(event, str):
        return event
    raise TypeError(f"an event must be an Events member, a registered custom event or a string, got {event!r}")


class _Entry:
    """One registration: the user's handler, its ordering and the pre-bound callable to fire."""

    __slots__ = ("call", "handle", "handler", "priority", "seq")

    def __init__(self, handler: Callable, priority: int, seq: int, call: Callable, handle: Any) -> None:
        self.handler = handler
        self.priority = priority
        self.seq = seq
        self.call = call
        self.handle = handle

    def sort_key(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


class _HandlerList:
    """The handlers of one event; ``calls`` is an immutable snapshot, so firing never sees a
    list that a handler is changing."""

    __slots__ = ("calls", "entries")

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.calls: tuple[Callable, ...] = ()

    def add(self, entry: _Entry) -> None:
        keys = [e.sort_key() for e in self.entries]
        self.entries.insert(bisect.bisect_right(keys, entry.sort_key()), entry)
        self.calls = tuple(e.call for e in self.entries)

    def remove(self, predicate: Callable[[_Entry], bool]) -> int:
        kept = [e for e in self.entries if not predicate(e)]
        removed = len(self.entries) - len(kept)
        self.entries = kept
        self.calls = tuple(e.call for e in kept)
        return removed


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
        self._handlers: dict[str, _HandlerList] = {e.name: _HandlerList() for e in Events}
        self._event_to_attr: dict[str, str] = dict(_BUILTIN_ATTRS)
        self._fire_counts: dict[str, int] = {}
        self._seq = 0
        self._flag = False  # any of terminate / terminate_epoch / interrupt was asked for
        self._should_terminate: bool | str = False
        self._should_terminate_single_epoch = False
        self._should_interrupt = False
        self._data_iter: Any = None
        self._started = False  # inside a run that an interrupt() paused
        self._in_epoch = False
        self._epoch_iter = 0
        self._resume_epoch_iter: int | None = None

    # ------------------------------------------------------------------ handlers

    def register_events(self, *event_names: Any, event_to_attr: Mapping[Any, str] | None = None) -> None:
        """Allow custom events (``EventEnum`` members or strings) to be handled and fired.

        ``event_to_attr`` maps an event to the ``state`` attribute its filters count by; without
        it, filters count how many times the event has been fired.
        """
        for event in event_names:
            key = _event_key(event)
            self._handlers.setdefault(key, _HandlerList())
        for event, attr in (event_to_attr or {}).items():
            if not isinstance(attr, str):
                raise TypeError(f"event_to_attr values must be state attribute names, got {attr!r}")
            self._event_to_attr[_event_key(event)] = attr

    def add_event_handler(
        self, event_name: Any, handler: Callable, *args: Any, priority: int | None = None, **kwargs: Any
    ) -> RemovableEventHandle:
        """Call ``handler`` whenever ``event_name`` fires (filtered events and ``|`` lists allowed).

        ``args``/``kwargs`` are passed to the handler after the engine (when its signature takes
        the engine) and after the event's own arguments (the exception, for EXCEPTION_RAISED).
        ``priority`` (keyword only; default: the handler's ``priority`` attribute, else 0) orders
        handlers of one event, higher first. Returns a handle whose ``remove()`` detaches it.
        """
        events = list(event_name) if isinstance(event_name, EventsList) else [event_name]
        if not events:
            raise ValueError("add_event_handler got an empty EventsList")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if priority is None:
            priority = getattr(handler, "priority", Priority.DEFAULT)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, got {priority!r}")
        handle = RemovableEventHandle(self, handler, [])
        prepared = []
        for event in events:
            key = _event_key(event)
            if key not in self._handlers:
                raise ValueError(
                    f"unknown event {event!r}: register custom events with engine.register_events() first "
                    f"(known: {', '.join(sorted(self._handlers))})"
                )
            call = self._bind(handler, key, args, kwargs)
            flt = getattr(event, "filter", None)
            if flt is not None:
                call = self._filtered(call, key, flt)
            prepared.append((key, event, call))
        for key, event, call in prepared:
            self._seq += 1
            self._handlers[key].add(_Entry(handler, int(priority), self._seq, call, handle))
            handle.events.append(event)
        return handle

    def on(self, event_name: Any, *args: Any, priority: int | None = None, **kwargs: Any) -> Callable:
        """Decorator form of :meth:`add_event_handler`."""

        def decorator(handler: Callable) -> Callable:
            self.add_event_handler(event_name, handler, *args, priority=priority, **kwargs)
            return handler

        return decorator

    def has_event_handler(self, handler: Callable, event_name: Any = None) -> bool:
        """Whether ``handler`` is attached (to ``event_name``, or to any event)."""
        lists = [self._handlers.get(_event_key(event_name))] if event_name is not None else self._handlers.values()
        return any(_same(e.handler, handler) for hl in lists if hl is not None for e in hl.entries)

    def remove_event_handler(self, handler: Callable, event_name: Any) -> None:
        """Detach ``handler`` from ``event_name``; raises ``ValueError`` if it was not attached."""
        hl = self._handlers.get(_event_key(event_name))
        if hl is None or not hl.remove(lambda e: _same(e.handler, handler)):
            raise ValueError(f"handler {handler!r} is not attached to event {event_name!r}")

    def _remove_entry(self, event: Any, handle: RemovableEventHandle) -> None:
        hl = self._handlers.get(_event_key(event))
        if hl is not None:
            hl.remove(lambda e: e.handle is handle)

    def _bind(self, handler: Callable, key: str, args: tuple, kwargs: dict) -> Callable:
        """Check the handler's signature now, and return ``call(engine, *event_args)``."""
        event_args: tuple = (Exception(),) if key == "EXCEPTION_RAISED" else ()
        try:
            sig = inspect.signature(handler)
        except (TypeError, ValueError):  # builtins without a signature: trust the Ignite default
            sig = None
        takes_engine = True
        if sig is not None:
            try:
                sig.bind(self, *event_args, *args, **kwargs)
            except TypeError:
                try:
                    sig.bind(*event_args, *args, **kwargs)
                    takes_engine = False
                except TypeError:
                    shown = ", ".join(
                        ["engine"] + (["exception"] if event_args else []) + [repr(a) for a in args]
                        + [f"{k}={v!r}" for k, v in kwargs.items()]
                    )
                    name = getattr(handler, "__qualname__", repr(handler))
                    raise ValueError(
                        f"handler {name}{sig} for event {key} cannot be called as {name}({shown}) "
                        f"nor without the engine; change its signature or the arguments passed"
                    ) from None
        if takes_engine:
            if not args and not kwargs:
                return handler
            return lambda engine, *ea: handler(engine, *ea, *args, **kwargs)
        return lambda engine, *ea: handler(*ea, *args, **kwargs)

    def _filtered(self, call: Callable, key: str, flt: Callable) -> Callable:
        attr = self._event_to_attr.get(key)
        if attr is not None:

            def filtered_by_state(engine: Engine, *ea: Any) -> None:
                if flt(engine, getattr(engine.state, attr)):
                    call(engine, *ea)

            return filtered_by_state

        def filtered_by_count(engine: Engine, *ea: Any) -> None:
            if flt(engine, engine._fire_counts.get(key, 0)):
                call(engine, *ea)

        return filtered_by_count

    def fire_event(self, event_name: Any, *event_args: Any) -> None:
        """Fire a (registered custom) event now, calling its handlers."""
        key = _event_key(event_name)
        if key not in self._handlers:
            raise ValueError(f"unknown event {event_name!r}: register it with engine.register_events() first")
        self._fire(key, event_name, *event_args)

    def _fire(self, key: str, event: Any, *event_args: Any) -> None:
        self._fire_counts[key] = self._fire_counts.get(key, 0) + 1
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
        ``max_iters`` and the state attributes named in ``state_dict_user_keys``."""
        s = self.state
        out: dict[str, Any] = {
            "iteration": s.iteration,
            "epoch": s.epoch,
            "epoch_length": s.epoch_length,
            "max_epochs": s.max_epochs,
            "max_iters": s.max_iters,
            "epoch_iteration": self._epoch_iter if self._in_epoch else 0,
        }
        for k in self.state_dict_user_keys:
            out[k] = getattr(s, k)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from saved progress: the next ``run()`` resumes at that iteration/epoch.

        Needs ``iteration`` or ``epoch``; with only ``epoch``, iteration is epoch * epoch_length.
        A mid-epoch iteration resumes inside that epoch (feeding the right data is the caller's job):
        with ``epoch_iteration`` (what :meth:`state_dict` writes) exactly there, even when epochs
        were cut short or have no fixed length; without it, at ``iteration % epoch_length``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in self.state_dict_user_keys if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict lacks the user keys {missing}")
        # validate everything before touching the state: a rejected dict leaves the engine as it was
        iteration, epoch = state_dict.get("iteration"), state_dict.get("epoch")
        if iteration is None and epoch is None:
            raise ValueError("state_dict must hold 'iteration' or 'epoch'")
        epoch_length = state_dict.get("epoch_length")
        if state_dict.get("max_epochs") is None and state_dict.get("max_iters") is None:
            raise ValueError("state_dict must hold 'max_epochs' or 'max_iters'")
        if iteration is None and epoch_length is None:
            raise ValueError("state_dict with only 'epoch' needs 'epoch_length' to derive the iteration")
        s = self.state
        s.epoch_length = epoch_length
        s.max_epochs = state_dict.get("max_epochs")
        s.max_iters = state_dict.get("max_iters")
        self._resume_epoch_iter = None
        epoch_iteration = state_dict.get("epoch_iteration")
        if iteration is not None and epoch is not None and epoch_iteration is not None:
            s.iteration = int(iteration)
            s.epoch = int(epoch) - 1 if epoch_iteration else int(epoch)
            self._resume_epoch_iter = int(epoch_iteration) or None
        elif iteration is not None:
            s.iteration = int(iteration)
            if s.epoch_length:
                s.epoch = s.iteration // s.epoch_length
                inner = s.iteration % s.epoch_length
                self._resume_epoch_iter = inner or None
            else:
                s.epoch = int(epoch or 0)
        else:
            s.epoch = int(epoch)
            s.iteration = s.epoch * s.epoch_length
        for k in self.state_dict_user_keys:
            setattr(s, k, state_dict[k])
        self._started = False
        self._in_epoch = False
        self._data_iter = None

    def _is_done(self) -> bool:
        s = self.state
        if s.max_iters is not None and s.iteration >= s.max_iters:
            return True
        if s.max_epochs is not None:
            if s.epoch >= s.max_epochs:
                return True
            if s.epoch_length is not None and s.iteration >= s.epoch_length * s.max_epochs:
                return True
        return False

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
        if data is not None and not isinstance(data, Iterable):
            raise TypeError(f"data must be iterable (a DataLoader, a list, ...), got {type(data).__name__}")
        for name, value in (("max_epochs", max_epochs), ("max_iters", max_iters), ("epoch_length", epoch_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}")
        if max_epochs is not None and max_iters is not None:
            raise ValueError("give `max_epochs` or `max_iters`, not both")
        s = self.state
        # never run, or Ignite's way to restart an unfinished run: `state.max_epochs = None`
        unset = s.max_epochs is None and s.max_iters is None
        if self._started and not unset:  # resuming an interrupted run
            if data is not None and data is not s.dataloader:
                self.set_data(data)
            self._extend(max_epochs, max_iters)
        elif unset or (self._resume_epoch_iter is None and self._is_done()):  # a loaded mid-epoch state still has its epoch to finish
            if data is None:
                raise ValueError("run() needs data for a new run")
            if epoch_length is None:
                epoch_length = _data_length(data)
                if epoch_length == 0:
                    raise ValueError("data is empty: it has length 0")
            s.iteration = 0
            s.epoch = 0
            s.epoch_length = epoch_length
            s.max_iters = max_iters
            s.max_epochs = max_epochs if max_epochs is not None else (None if max_iters is not None else 1)
            if max_iters is not None and epoch_length is not None:
                s.max_epochs = math.ceil(max_iters / epoch_length)
            s.dataloader = data
            s.metrics = {}
            s.output = s.batch = None
            self._data_iter = None
            self._started = self._in_epoch = False
            self._resume_epoch_iter = None
        else:  # continuing from load_state_dict() or a terminated run
            if data is not None:
                s.dataloader = data
            if s.dataloader is None:
                raise ValueError("run() needs data to continue this run")
            if epoch_length is not None:
                s.epoch_length = epoch_length
            self._extend(max_epochs, max_iters)
            self._data_iter = None
        self._should_terminate = False
        self._should_terminate_single_epoch = False
        self._flag = self._should_interrupt = False
        try:
            self._run()
        except BaseException as exc:
            self._started = self._in_epoch = False
            self._data_iter = None
            if self._handlers["EXCEPTION_RAISED"].calls:
                self.logger.debug("engine run is terminating due to exception: %r", exc)
                self._fire("EXCEPTION_RAISED", Events.EXCEPTION_RAISED, exc)
            else:
                raise
        return self.state

    def _extend(self, max_epochs: int | None, max_iters: int | None) -> None:
        s = self.state
        if max_epochs is not None:
            if max_epochs < s.epoch:
                raise ValueError(f"`max_epochs`={max_epochs} is below the current epoch {s.epoch} of the run being continued")
            s.max_epochs, s.max_iters = max_epochs, None
        if max_iters is not None:
            if max_iters < s.iteration:
                raise ValueError(f"`max_iters`={max_iters} is below the current iteration {s.iteration}")
            s.max_iters, s.max_epochs = max_iters, None

    def _run(self) -> None:
        s = self.state
        times = s.times
        t0 = time.perf_counter()
        if not self._started:
            self._started = True
            self._fire("STARTED", Events.STARTED)
        while self._in_epoch or self._resume_epoch_iter is not None or not (self._is_done() or self._should_terminate):
            if not self._in_epoch:
                if self._should_interrupt:
                    return self._interrupt_now()
                s.epoch += 1
                self._in_epoch = True
                self._epoch_iter = self._resume_epoch_iter or 0
                self._resume_epoch_iter = None
                self._should_terminate_single_epoch = False
                self._refresh_flag()
                self._epoch_t0 = time.perf_counter()
                self._fire("EPOCH_STARTED", Events.EPOCH_STARTED)
                if self._flag:
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
            self._in_epoch = False
            times["EPOCH_COMPLETED"] = time.perf_counter() - self._epoch_t0
            self._fire("EPOCH_COMPLETED", Events.EPOCH_COMPLETED)
            times["EPOCH_COMPLETED"] = time.perf_counter() - self._epoch_t0
        self._in_epoch = False
        if self._should_terminate:
            self._fire("TERMINATE", Events.TERMINATE)
        self._started = False
        self._data_iter = None
        times["COMPLETED"] = time.perf_counter() - t0
        if self._should_terminate != "skip_completed":
            self._fire("COMPLETED", Events.COMPLETED)
            times["COMPLETED"] = time.perf_counter() - t0
        return None

    def _refresh_flag(self) -> None:
        self._flag = bool(self._should_terminate) or self._should_terminate_single_epoch or self._should_interrupt

    def _interrupt_now(self) -> None:
        self._should_interrupt = False
        self._refresh_flag()
        self._fire("INTERRUPT", Events.INTERRUPT)

    def _run_epoch(self) -> bool:
        """Run iterations until the epoch ends; returns True when interrupted."""
        s = self.state
        handlers = self._handlers
        get_started = handlers["GET_BATCH_STARTED"]
        get_completed = handlers["GET_BATCH_COMPLETED"]
        it_started = handlers["ITERATION_STARTED"]
        it_completed = handlers["ITERATION_COMPLETED"]
        process = self._process_function
        epoch_length = s.epoch_length
        max_iters = s.max_iters
        n = self._epoch_iter
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
                if epoch_length is None:  # the data defines the epoch
                    if n == 0:
                        raise ValueError("data yielded no batch: the epoch would be empty") from None
                    s.epoch_length = n
                    if max_iters is not None:
                        s.max_epochs = math.ceil(max_iters / n)
                    self._data_iter = None
                    return False
                if restarted:
                    warnings.warn(
                        f"data ran out at iteration {s.iteration} before the run's end "
                        f"(epoch_length={epoch_length}, max_epochs={s.max_epochs}, max_iters={max_iters})",
                        stacklevel=3,
                    )
                    self._should_terminate = self._flag = True
                    return False
                self._fire("DATALOADER_STOP_ITERATION", Events.DATALOADER_STOP_ITERATION)
                data_iter = self._data_iter = iter(s.dataloader)
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
            self._epoch_iter = n
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

    def _end_epoch_early(self) -> bool:
        if self._should_terminate_single_epoch:
            self._should_terminate_single_epoch = False
            self._refresh_flag()
            # the next epoch starts from the beginning of the data (as in Ignite), not mid-pass
            self._data_iter = None
            self._fire("TERMINATE_SINGLE_EPOCH", Events.TERMINATE_SINGLE_EPOCH)
        return False


def _data_length(data: Iterable) -> int | None:
    # a DataLoader over an IterableDataset has __len__ but raises TypeError when the dataset has none
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _same(registered: Callable, handler: Callable) -> bool:
    return registered is handler or registered == handler
