"""Events, event filters and the removable handle: the vocabulary of :class:`ember.engine.Engine`.

``Events.ITERATION_COMPLETED`` names an event; calling it with a filter gives a filtered event::

    Events.ITERATION_COMPLETED(every=100)       # iterations 100, 200, ...
    Events.EPOCH_COMPLETED(once=3)              # only after epoch 3
    Events.ITERATION_STARTED(after=10, before=20)
    Events.EPOCH_STARTED(event_filter=lambda engine, epoch: epoch in (1, 5))
    Events.STARTED | Events.EPOCH_COMPLETED     # both, through one registration

A filter receives the engine and the event's counter: ``state.iteration`` for batch and iteration
events, ``state.epoch`` for epoch events and STARTED/COMPLETED, and for every other event (custom
ones included) the number of times the engine has fired it so far, this firing included.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from enum import Enum, IntEnum
from typing import Any, Protocol

#: ``(engine, count) -> bool``: whether a handler runs at this firing (the engine is passed as ``Any``:
#: this module is the engine's vocabulary and knows nothing of the engine itself)
EventFilter = Callable[[Any, int], bool]


class Priority(IntEnum):
    """Where a handler runs among the handlers of one event: higher first, then registration order.

    Metrics update and compute before anything reads them, user handlers run next, loggers read
    what user handlers logged, and checkpointing and early stopping act last on the final values.
    """

    METRICS = 300
    TRAINER = 200
    DEFAULT = 0
    LOGGER = -100
    CHECKPOINT = -200
    EARLY_STOPPING = -300
    TRAINER_LAST = -1000


def priority_order(priority: int, position: int) -> tuple[int, int]:
    """The sort key of everything ordered by :class:`Priority` (engine handlers, Trainer callbacks):
    higher priority first, then the order in which they were added."""
    return (-int(priority), position)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def _every_filter(every: int) -> EventFilter:
    def every_filter(engine: Any, count: int) -> bool:
        return count % every == 0

    return every_filter


def _once_filter(once: int | Iterable[int]) -> EventFilter:
    if isinstance(once, int):
        target = _positive_int("once", once)

        def once_filter(engine: Any, count: int) -> bool:
            return count == target

        return once_filter
    targets = frozenset(_positive_int("once", v) for v in once)
    if not targets:
        raise ValueError("`once` must be a positive integer or a non-empty list of them, got []")

    def once_any_filter(engine: Any, count: int) -> bool:
        return count in targets

    return once_any_filter


def _window_filter(before: int | None, after: int | None, every: int | None) -> EventFilter:
    lo = -1 if after is None else after
    hi = None if before is None else before
    step = 1 if every is None else every

    def window_filter(engine: Any, count: int) -> bool:
        return count > lo and (hi is None or count < hi) and count % step == 0

    return window_filter


class CallableEventWithFilter:
    """An event name that can be called to attach a filter; equal to its unfiltered self."""

    def __init__(self, value: str, event_filter: EventFilter | None = None, name: str | None = None):
        self._value_ = value
        self._name_ = name if name is not None else value
        self.filter = event_filter

    @property
    def name(self) -> str:
        return self._name_

    @property
    def value(self) -> str:
        return self._value_

    def __call__(
        self,
        event_filter: EventFilter | None = None,
        every: int | None = None,
        once: int | Iterable[int] | None = None,
        before: int | None = None,
        after: int | None = None,
    ) -> CallableEventWithFilter:
        """Return this event restricted by a filter (see the module docstring)."""
        if event_filter is not None:
            if any(v is not None for v in (every, once, before, after)):
                raise ValueError("`event_filter` cannot be combined with every/once/before/after")
            if not callable(event_filter):
                raise TypeError(f"`event_filter` must be callable(engine, count), got {event_filter!r}")
            chosen = event_filter
        elif once is not None:
            if any(v is not None for v in (every, before, after)):
                raise ValueError("`once` cannot be combined with every/before/after")
            chosen = _once_filter(once)
        elif before is not None or after is not None:
            if every is not None:
                _positive_int("every", every)
            if before is not None:
                _positive_int("before", before)
            if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
                raise ValueError(f"`after` must be a non-negative integer, got {after!r}")
            chosen = _window_filter(before, after, every)
        elif every is not None:
            every = _positive_int("every", every)
            if every == 1:
                return self._base()
            chosen = _every_filter(every)
        else:
            raise ValueError("give one of event_filter, every, once, before or after")
        return CallableEventWithFilter(self._value_, chosen, self._name_)

    def _base(self) -> CallableEventWithFilter:
        return CallableEventWithFilter(self._value_, None, self._name_)

    def __or__(self, other: Any) -> EventsList:
        return EventsList([self]) | other

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CallableEventWithFilter):
            return self._name_ == other._name_
        if isinstance(other, str):
            return self._name_ == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._name_)

    def __repr__(self) -> str:
        suffix = "" if self.filter is None else f"(filter={getattr(self.filter, '__name__', self.filter)})"
        return f"{type(self).__name__}.{self._name_}{suffix}" if isinstance(self, Enum) else f"Event({self._name_}){suffix}"

    def __str__(self) -> str:
        return self._name_


class EventEnum(CallableEventWithFilter, Enum):
    """Base class for sets of events, the built-in :class:`Events` and users' own::

        class BackpropEvents(EventEnum):
            BACKWARD_STARTED = "backward_started"

        engine.register_events(*BackpropEvents)
        engine.fire_event(BackpropEvents.BACKWARD_STARTED)
    """

    def __new__(cls, value: str) -> EventEnum:
        obj = CallableEventWithFilter.__new__(cls)
        obj._value_ = value
        return obj

    def __init__(self, value: str) -> None:
        CallableEventWithFilter.__init__(self, value, None, self._name_)

    def __hash__(self) -> int:
        return hash(self._name_)

    def __eq__(self, other: object) -> bool:
        return CallableEventWithFilter.__eq__(self, other)


class Events(EventEnum):
    """The events an :class:`~ember.engine.Engine` fires; the engine module's docstring shows where."""

    STARTED = "started"
    EPOCH_STARTED = "epoch_started"
    GET_BATCH_STARTED = "get_batch_started"
    GET_BATCH_COMPLETED = "get_batch_completed"
    ITERATION_STARTED = "iteration_started"
    ITERATION_COMPLETED = "iteration_completed"
    EPOCH_COMPLETED = "epoch_completed"
    COMPLETED = "completed"
    EXCEPTION_RAISED = "exception_raised"
    TERMINATE = "terminate"
    TERMINATE_SINGLE_EPOCH = "terminate_single_epoch"
    INTERRUPT = "interrupt"
    DATALOADER_STOP_ITERATION = "dataloader_stop_iteration"


class EventsList:
    """Several events joined with ``|``; a handler added for it is added for each of them."""

    def __init__(self, events: Iterable[Any] = ()) -> None:
        self._events: list[Any] = []
        for e in events:
            self._append(e)

    def _append(self, event: Any) -> None:
        if not isinstance(event, (CallableEventWithFilter, str)):
            raise TypeError(f"an EventsList holds events, got {event!r}")
        self._events.append(event)

    def __or__(self, other: Any) -> EventsList:
        joined = EventsList(self._events)
        for e in other if isinstance(other, EventsList) else [other]:
            joined._append(e)
        return joined

    def __iter__(self) -> Iterator[Any]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return " | ".join(repr(e) for e in self._events)


class HandlerOwner(Protocol):
    """What a :class:`RemovableEventHandle` detaches its handler from (an engine's handler table)."""

    def remove_handle(self, event: Any, handle: RemovableEventHandle) -> None: ...


class RemovableEventHandle:
    """Returned by ``add_event_handler``; ``remove()`` (or leaving its ``with`` block) detaches it."""

    def __init__(self, owner: HandlerOwner, handler: Callable, events: list[Any]) -> None:
        self._owner = weakref.ref(owner)
        self.handler = handler
        self.events = events

    def remove(self) -> None:
        """Detach the handler from every event it was added for; removing twice is harmless."""
        owner = self._owner()
        if owner is None:
            return
        for event in self.events:
            owner.remove_handle(event, self)

    def __enter__(self) -> RemovableEventHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
