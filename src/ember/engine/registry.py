"""The handler table of an :class:`~ember.engine.Engine`: registration, signature checks, filters, removal.

Everything costly happens once, when a handler is added: its signature is checked against the
arguments it will get, a filter is wrapped around it, and it is placed by priority. Firing an event
is then a loop over ``table[name].calls``, a tuple of ready ``call(engine, *event_args)`` callables.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ember.engine.events import (
    CallableEventWithFilter,
    Events,
    EventsList,
    Priority,
    RemovableEventHandle,
    priority_order,
)


def event_key(event: Any) -> str:
    """The name an event is registered under: ``Events.EPOCH_COMPLETED(every=2)`` -> ``"EPOCH_COMPLETED"``."""
    if isinstance(event, CallableEventWithFilter):
        return event.name
    if isinstance(event, str):
        return event
    raise TypeError(f"an event must be an Events member, a registered custom event or a string, got {event!r}")


class HandlerEntry:
    """One registration: the user's handler, its ordering and the pre-bound callable to fire."""

    __slots__ = ("call", "handle", "handler", "priority", "seq")

    def __init__(
        self, handler: Callable, priority: int, seq: int, call: Callable, handle: RemovableEventHandle
    ) -> None:
        self.handler = handler
        self.priority = priority
        self.seq = seq
        self.call = call
        self.handle = handle

    def sort_key(self) -> tuple[int, int]:
        return priority_order(self.priority, self.seq)


class HandlerList:
    """The handlers of one event; ``calls`` is an immutable snapshot, so firing never sees a
    list that a handler is changing."""

    __slots__ = ("calls", "entries")

    def __init__(self) -> None:
        self.entries: list[HandlerEntry] = []
        self.calls: tuple[Callable, ...] = ()

    def add(self, entry: HandlerEntry) -> None:
        keys = [e.sort_key() for e in self.entries]
        self.entries.insert(bisect.bisect_right(keys, entry.sort_key()), entry)
        self.calls = tuple(e.call for e in self.entries)

    def remove(self, predicate: Callable[[HandlerEntry], bool]) -> int:
        kept = [e for e in self.entries if not predicate(e)]
        removed = len(self.entries) - len(kept)
        self.entries = kept
        self.calls = tuple(e.call for e in kept)
        return removed


class HandlerTable(dict[str, HandlerList]):
    """Event name -> its :class:`HandlerList`, for the built-in events and the registered custom ones.

    ``fire_counts`` counts the firings of events whose filters have no state attribute to count by.
    """

    def __init__(self) -> None:
        super().__init__((e.name, HandlerList()) for e in Events)
        self.fire_counts: dict[str, int] = {}
        self._seq = 0

    def register(self, event: Any) -> None:
        """Allow handlers for ``event`` (a custom event or its name)."""
        self.setdefault(event_key(event), HandlerList())

    def known_key(self, event: Any) -> str:
        """``event``'s name, or ``ValueError`` when it is not a registered event."""
        key = event_key(event)
        if key not in self:
            raise ValueError(
                f"unknown event {event!r}: register custom events with engine.register_events() first "
                f"(known: {', '.join(sorted(self))})"
            )
        return key

    def add(
        self,
        engine: Any,
        event_name: Any,
        handler: Callable,
        args: tuple,
        kwargs: dict[str, Any],
        priority: int | None,
        event_to_attr: Mapping[str, str],
    ) -> RemovableEventHandle:
        """Register ``handler`` for ``event_name`` (see ``Engine.add_event_handler``); all of its
        events are checked before any is registered, so a rejected handler is nowhere."""
        events = list(event_name) if isinstance(event_name, EventsList) else [event_name]
        if not events:
            raise ValueError("add_event_handler got an empty EventsList")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if priority is None:
            priority = handler_priority(handler)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority (`priority=` or the handler's `ember_priority`) must be an int, got {priority!r}")
        handle = RemovableEventHandle(self, engine, handler, event_name)
        prepared = []
        for event in events:
            key = self.known_key(event)
            call = bind_handler(engine, handler, key, args, kwargs)
            flt = getattr(event, "filter", None)
            if flt is not None:
                call = self._filtered(call, key, flt, event_to_attr.get(key))
            prepared.append((key, event, call))
        for key, event, call in prepared:
            self._seq += 1
            self[key].add(HandlerEntry(handler, int(priority), self._seq, call, handle))
            handle.events.append(event)
        return handle

    def has(self, handler: Callable, event_name: Any = None) -> bool:
        """Whether ``handler`` is attached (to ``event_name``, or to any event)."""
        lists = [self.get(event_key(event_name))] if event_name is not None else self.values()
        return any(_same(e.handler, handler) for hl in lists if hl is not None for e in hl.entries)

    def remove_handler(self, handler: Callable, event_name: Any) -> None:
        """Detach ``handler`` from ``event_name``; raises ``ValueError`` if it was not attached."""
        hl = self.get(event_key(event_name))
        if hl is None or not hl.remove(lambda e: _same(e.handler, handler)):
            raise ValueError(f"handler {handler!r} is not attached to event {event_name!r}")

    def remove_handle(self, event: Any, handle: RemovableEventHandle) -> None:
        """Detach the registration that ``handle`` made for ``event`` (what ``handle.remove()`` calls)."""
        hl = self.get(event_key(event))
        if hl is not None:
            hl.remove(lambda e: e.handle is handle)

    def _filtered(self, call: Callable, key: str, flt: Callable, attr: str | None) -> Callable:
        if attr is not None:

            def filtered_by_state(engine: Any, *ea: Any) -> None:
                if flt(engine, getattr(engine.state, attr)):
                    call(engine, *ea)

            return filtered_by_state

        fire_counts = self.fire_counts

        def filtered_by_count(engine: Any, *ea: Any) -> None:
            if flt(engine, fire_counts.get(key, 0)):
                call(engine, *ea)

        return filtered_by_count


def handler_priority(handler: Callable) -> int:
    """The priority a handler asks for without ``priority=``: its ``ember_priority`` attribute
    (Ember's own name, so a ``priority`` attribute that users' objects have for their own reasons,
    or the attributes a ``MagicMock`` makes up, are never read), else ``Priority.DEFAULT``."""
    if inspect.getattr_static(handler, "ember_priority", None) is None:
        return Priority.DEFAULT
    return handler.ember_priority  # type: ignore[attr-defined]


def bind_handler(engine: Any, handler: Callable, key: str, args: tuple, kwargs: dict[str, Any]) -> Callable:
    """Check the handler's signature now, and return ``call(engine, *event_args)``."""
    if key == "TERMINATE_SINGLE_EPOCH":
        return _bind_epoch_cut_handler(engine, handler, args, kwargs)
    event_args: tuple = (Exception(),) if key == "EXCEPTION_RAISED" else ()
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # builtins without a signature: trust the Ignite default
        sig = None
    takes_engine = True
    if sig is not None:
        try:
            sig.bind(engine, *event_args, *args, **kwargs)
        except TypeError:
            try:
                sig.bind(*event_args, *args, **kwargs)
                takes_engine = False
            except TypeError:
                shown = ", ".join(
                    ["engine"]
                    + (["exception"] if event_args else [])
                    + [repr(a) for a in args]
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


def _bind_epoch_cut_handler(engine: Any, handler: Callable, args: tuple, kwargs: dict[str, Any]) -> Callable:
    """TERMINATE_SINGLE_EPOCH handlers get ``iter_counter=`` (the iterations the epoch ran) when
    they take it, as in Ignite; handlers that do not are called without it."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        sig = None

    def binds(*a: Any, **kw: Any) -> bool:
        try:
            sig.bind(*a, **kw)
        except TypeError:
            return False
        return True

    if sig is None:  # builtins without a signature: the Ignite default, with the engine
        return lambda engine, iter_counter=0: handler(engine, *args, **kwargs)
    if binds(engine, *args, iter_counter=0, **kwargs):
        return lambda engine, iter_counter=0: handler(engine, *args, iter_counter=iter_counter, **kwargs)
    if binds(*args, iter_counter=0, **kwargs):
        return lambda engine, iter_counter=0: handler(*args, iter_counter=iter_counter, **kwargs)
    if binds(engine, *args, **kwargs):
        return lambda engine, iter_counter=0: handler(engine, *args, **kwargs)
    if binds(*args, **kwargs):
        return lambda engine, iter_counter=0: handler(*args, **kwargs)
    name = getattr(handler, "__qualname__", repr(handler))
    raise ValueError(
        f"handler {name}{sig} for event TERMINATE_SINGLE_EPOCH cannot be called as {name}(engine, iter_counter=n), "
        f"{name}(engine) nor without the engine (with args={args!r}, kwargs={kwargs!r})"
    )


def _same(registered: Callable, handler: Callable) -> bool:
    return registered is handler or registered == handler
