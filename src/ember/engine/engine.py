"""The event loop under everything in Ember: an :class:`Engine` runs a process function over data.

Where each event fires in ``engine.run(data, max_epochs, max_iters, epoch_length)`` (Ignite 0.5's loop)::

    fire STARTED                                            .
    while the run is not done (max_epochs / max_iters) and not terminated:
        epoch += 1; fire EPOCH_STARTED                      .
        repeat until epoch_length iterations (or, when the length is unknown, until the data ends):
            state.batch = None; fire GET_BATCH_STARTED      .
            state.batch = next(data)      # data ran out: fire DATALOADER_STOP_ITERATION  .
                                          #   and restart it (no second GET_BATCH_STARTED);
                                          #   out again at once: warn and end the epoch
            state.output = None; fire GET_BATCH_COMPLETED   .
            iteration += 1; fire ITERATION_STARTED          .
            state.output = process_function(engine, batch)
            fire ITERATION_COMPLETED                        .
            max_iters reached inside an epoch: terminate (below)
        fire EPOCH_COMPLETED                                .
    fire COMPLETED

    run(None, epoch_length=n)   batch is None and the GET_BATCH_* / DATALOADER_STOP_ITERATION events
                                are not fired.

Every ``.`` is a check point, where requests made by handlers (or the process function) act:

    terminate()            the run stops here (the current epoch's EPOCH_COMPLETED is not fired):
                           fire TERMINATE, then COMPLETED (not with ``skip_completed=True``).
    terminate_epoch()      inside an epoch (EPOCH_STARTED included, where Ignite raises): fire
                           TERMINATE_SINGLE_EPOCH (handlers taking ``iter_counter`` get the epoch's
                           iterations), then EPOCH_COMPLETED (not with ``skip_epoch_completed=True``);
                           the next epoch starts from the start of the data. At STARTED: an error.
    interrupt()            fire INTERRUPT and return from run(); run() again continues from that
                           very point (STARTED does not fire again).
    an exception           with EXCEPTION_RAISED handlers: they get (engine, exception) and run()
                           returns (Ignite goes on with the run after one raised inside an
                           iteration); with none, the exception propagates unchanged.

``run()`` again after the run ended (or was terminated, or failed) continues it when there is
something left to run: a larger ``max_epochs`` extends a finished run, a smaller one raises; a
terminated run goes on with its next epoch from the start of the data. A finished run, or one whose
``state.max_epochs``/``state.max_iters`` were set to ``None``, starts again from iteration 0.

Handlers of one event run by priority (higher first, see :class:`~ember.engine.events.Priority`),
then in the order they were added. Handlers whose signature takes the engine receive it first.
The engine is compatible with ``ignite.engine`` 0.5; where Ember deliberately differs is listed in
the Ignite migration guide.

This file is the engine's API; the loop itself is :mod:`ember.engine.loop`, the handler table
(registration, signature checks, filters) :mod:`ember.engine.registry`, run bounds and saved positions
:mod:`ember.engine.progress`.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ember.engine.events import Events, RemovableEventHandle
from ember.engine.loop import EventLoop
from ember.engine.progress import plan_run, progress_dict, resume_point
from ember.engine.registry import event_key
from ember.engine.state import State


class Engine(EventLoop):
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

    ``process_function`` may be ``None`` when the engine is built before its step is known; set
    :attr:`process_function` before ``run()``.
    """

    def __init__(self, process_function: Callable[[Engine, Any], Any] | None) -> None:
        super().__init__()
        if process_function is not None:
            self.process_function = process_function
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.state_dict_user_keys: list[str] = []
        self._loaded_offset: int | None = None  # iterations done in the epoch a loaded state_dict resumes

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

    def has_registered_events(self, event: Any) -> bool:
        """Whether ``event`` (a built-in event, a registered custom one or its name) can be fired."""
        try:
            return event_key(event) in self._handlers
        except TypeError:
            return False

    def add_event_handler(
        self, event_name: Any, handler: Callable, *args: Any, priority: int | None = None, **kwargs: Any
    ) -> RemovableEventHandle:
        """Call ``handler`` whenever ``event_name`` fires (filtered events and ``|`` lists allowed).

        ``args``/``kwargs`` are passed to the handler after the engine (when its signature takes
        the engine) and after the event's own arguments (the exception, for EXCEPTION_RAISED).
        ``priority`` (keyword only; Ember's addition; default: the handler's ``ember_priority``
        attribute, else 0) orders handlers of one event, higher first. Returns a handle whose
        ``remove()`` detaches it.
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

    @property
    def process_function(self) -> Callable[[Engine, Any], Any] | None:
        """What runs on each batch; replaceable between runs (the Trainer builds its own per run)."""
        return self._process_function

    @process_function.setter
    def process_function(self, fn: Callable[[Engine, Any], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"process_function must be callable(engine, batch), got {fn!r}")
        try:
            inspect.signature(fn).bind(self, None)
        except TypeError as err:
            raise ValueError(f"process_function {fn!r} cannot be called as fn(engine, batch): {err}") from None
        except ValueError:  # builtins without a signature
            pass
        self._process_function = fn

    def set_data(self, data: Iterable) -> None:
        """Swap the data of a run in progress; the next batch comes from the new data (the epoch
        length stays as it is)."""
        if not isinstance(data, Iterable):
            raise TypeError(f"data must be iterable, got {type(data).__name__}")
        self.state.dataloader = data
        self._data_iter = None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> OrderedDict[str, Any]:
        """Progress as plain values: Ignite's ``epoch_length``, ``iteration``, ``max_epochs`` or
        ``max_iters`` and the state attributes named in ``state_dict_user_keys``, and Ember's
        ``epoch`` and ``epoch_iteration`` (see :func:`~ember.engine.progress.progress_dict`)."""
        return progress_dict(self.state, self._in_epoch, self.state_dict_user_keys)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from saved progress: the next ``run()`` resumes at that iteration/epoch.

        Takes Ignite's dicts (``iteration`` or ``epoch``, ``epoch_length``, ``max_epochs`` or
        ``max_iters``) and Ember's own (with ``epoch`` and ``epoch_iteration``: exactly there, even
        when epochs were cut short or have no fixed length). Feeding the right data is the caller's job.
        """
        # validated completely before touching the state: a rejected dict leaves the engine as it was
        point = resume_point(state_dict, self.state_dict_user_keys)
        s = self.state
        s.iteration, s.epoch, s.epoch_length = point.iteration, point.epoch, point.epoch_length
        s.max_epochs, s.max_iters = point.max_epochs, point.max_iters
        for k, v in point.user_values.items():
            setattr(s, k, v)
        s.epoch_iteration = 0  # until the epoch starts again at its saved position
        self._loaded_offset = point.epoch_iteration
        self._running = self._in_epoch = False
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

        ``data=None`` runs ``epoch_length`` iterations per epoch with ``batch=None``.
        """
        if self._process_function is None:
            raise ValueError("the engine has no process function: set engine.process_function before run()")
        s = self.state
        if plan_run(s, self._running, data, max_epochs, max_iters, epoch_length):
            self._running = self._in_epoch = False
            self._data_iter = None
            self._start_offset, self._loaded_offset = 0, None
        elif not self._running:  # a terminated, failed or loaded run goes on with its next epoch
            self._start_offset = self._continue_offset()
        if self._data_iter is None and (data is not None or not self._running):
            s.dataloader = data
        try:
            self._run()
        except BaseException as exc:
            self._running = self._in_epoch = False
            self._data_iter = None
            if not self._handlers["EXCEPTION_RAISED"].calls:
                raise
            self.logger.debug("engine run is terminating due to exception: %r", exc)
            self._fire("EXCEPTION_RAISED", Events.EXCEPTION_RAISED, exc)
        return s

    def _continue_offset(self) -> int:
        """Iterations already done in the epoch a continued run starts with (as Ignite: none after
        terminate(), else ``iteration % epoch_length``; exactly the saved ones after load_state_dict)."""
        loaded, self._loaded_offset = self._loaded_offset, None
        if loaded is not None:
            return loaded
        if self._should_terminate:
            return 0
        s = self.state
        return s.iteration % s.epoch_length if s.epoch_length else s.iteration
