"""Events, event filters and the removable handle: the vocabulary of :class:`ember.engine.Engine`.

``Events.ITERATION_COMPLETED`` names an event; calling it with a filter gives a filtered event::

    Events.ITERATION_COMPLETED(every=100)           # iterations 100, 200, ...
    Events.EPOCH_COMPLETED(once=3)                  # only after epoch 3 (or once=[3, 7])
    Events.ITERATION_STARTED(after=10, before=20)   # 11 ... 19
    Events.ITERATION_COMPLETED(every=5, after=8)    # 9, 14, 19, ...: the first count after `after`, then every 5
    Events.EPOCH_STARTED(event_filter=lambda engine, epoch: epoch in (1, 5))
    Events.STARTED | Events.EPOCH_COMPLETED         # both, through one registration

These are Ignite's definitions, exactly (tests/compat/ignite compares every combination). A filter
receives the engine and the event's counter: ``state.iteration`` for batch and iteration events,
``state.epoch`` for epoch events and STARTED/COMPLETED, the attribute named by
``register_events(..., event_to_attr=)`` for custom events, and for every other event the number of
times the engine has fired it so far, this firing included (Ignite has no counter for those).
"""

from __future__ import annotations

import inspect
import math
import numbers
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def _is_count(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an integer (``numbers.Integral``, as Ignite checks) of at least ``minimum``."""
    return isinstance(value, numbers.Integral) and value >= minimum


def _every_filter(every: int) -> EventFilter:
    def every_filter(engine: Any, count: int) -> bool:
        return count % every == 0

    return every_filter


def _once_filter(once: list[int]) -> EventFilter:
    def once_filter(engine: Any, count: int) -> bool:
        return count in once

    return once_filter


def _window_filter(before: int | None, after: int | None, every: int | None) -> EventFilter:
    """Counts strictly between ``after`` (default 0) and ``before`` (default: no end); with ``every``,
    the first such count and every ``every``-th after it: ``after + 1``, ``after + 1 + every``, ..."""
    lo = 0 if after is None else after
    hi = math.inf if before is None else before
    if every is None:

        def window_filter(engine: Any, count: int) -> bool:
            return lo < count < hi

        return window_filter

    def every_in_window_filter(engine: Any, count: int) -> bool:
        return lo < count < hi and (count - lo - 1) % every == 0

    return every_in_window_filter


def _check_filter_signature(event_filter: Callable) -> None:
    try:
        sig = inspect.signature(event_filter)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        sig.bind(None, 0)
    except TypeError:
        name = getattr(event_filter, "__qualname__", repr(event_filter))
        raise ValueError(
            f"event_filter {name}{sig} must take (engine, count): it is called as event_filter(engine, count)"
        ) from None


class CallableEventWithFilter:
    """An event name that can be called to attach a filter; equal to its unfiltered self."""

    def __init__(self, value: str, event_filter: EventFilter | None = None, name: str | None = None):
        self._value_ = value
        self._name_ = name if name is not None else value
        self.filter = event_filter

    @property
    def name(self) -> str:
        """The event's name, as an Enum member's (``"ITERATION_COMPLETED"``); a filtered event keeps it."""
        return self._name_

    @property
    def value(self) -> str:
        """The event's value string, as an Enum member's (``"iteration_completed"``); a filtered event keeps it."""
        return self._value_

    def __call__(
        self,
        event_filter: EventFilter | None = None,
        every: int | None = None,
        once: int | Sequence[int] | None = None,
        before: int | None = None,
        after: int | None = None,
    ) -> CallableEventWithFilter:
        """Return this event restricted by a filter (see the module docstring).

        Give exactly one of ``event_filter``, ``once``, or any of ``every``/``before``/``after``
        (which combine). The rules are Ignite's: ``every`` fires at multiples of ``every``, alone,
        and at ``after + 1``, ``after + 1 + every``, ... within a window; ``before``/``after`` are
        exclusive bounds (``after`` defaults to 0); ``once`` is a positive integer or a non-empty
        sequence of them.
        """
        given = (event_filter is not None, once is not None, any(v is not None for v in (every, before, after)))
        if sum(given) != 1:
            raise ValueError(
                "give exactly one of `event_filter`, `once`, or `every`/`before`/`after` (which combine), got "
                f"event_filter={event_filter!r}, once={once!r}, every={every!r}, before={before!r}, after={after!r}"
            )
        if event_filter is not None and not callable(event_filter):
            raise TypeError(f"`event_filter` must be callable(engine, count), got {event_filter!r}")
        if every is not None and not _is_count(every, 1):
            raise ValueError(f"`every` must be a positive integer, got {every!r}")
        if once is not None:
            single = isinstance(once, int) and once > 0
            several = (
                isinstance(once, Sequence) and len(once) > 0 and all(isinstance(v, int) and v > 0 for v in once)
            )
            if not (single or several):
                raise ValueError(f"`once` must be a positive integer or a non-empty sequence of them, got {once!r}")
        for name, value in (("before", before), ("after", after)):
            if value is not None and not _is_count(value, 0):
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}")

        if event_filter is not None:
            _check_filter_signature(event_filter)
            chosen: EventFilter | None = event_filter
        elif once is not None:
            chosen = _once_filter([once] if isinstance(once, int) else list(once))
        elif before is not None or after is not None:
            chosen = _window_filter(before, after, every)
        else:
            chosen = None if every == 1 else _every_filter(every)  # every=1: the event itself
        return CallableEventWithFilter(self._value_, chosen, self._name_)

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
        # as Ignite: `Events.ITERATION_COMPLETED`, `Events.ITERATION_COMPLETED(filter=<function ...>)`
        owner = type(self).__name__ if isinstance(self, Enum) else "Events"
        return f"{owner}.{self._name_}" + ("" if self.filter is None else f"(filter={self.filter})")

    __str__ = __repr__


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

    def __getitem__(self, index: int) -> Any:
        return self._events[index]

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
    """Returned by ``add_event_handler``; ``remove()`` (or leaving its ``with`` block) detaches it.

    As in Ignite, ``handle.handler()`` and ``handle.engine()`` return the handler and the engine
    (the engine through a weak reference: ``None`` once it is gone), and ``handle.event_name`` is
    what the handler was added for (an event, a filtered event or an :class:`EventsList`).
    """

    def __init__(self, owner: HandlerOwner, engine: Any, handler: Callable, event_name: Any) -> None:
        self._owner = weakref.ref(owner)
        self.engine = weakref.ref(engine)
        self.handler = _Ref(handler)
        self.event_name = event_name
        self.events: list[Any] = []

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


class _Ref:
    """A strong reference with ``weakref.ref``'s interface: calling it returns the object."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __call__(self) -> Any:
        return self._obj
