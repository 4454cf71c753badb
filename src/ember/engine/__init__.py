"""Ember's event engine (Ignite-compatible): ``Engine``, ``Events``, ``State`` and filters.

See :mod:`ember.engine.engine` for the map of where each event fires.
"""

from ember.engine.engine import Engine
from ember.engine.events import (
    CallableEventWithFilter,
    EventEnum,
    Events,
    EventsList,
    Priority,
    RemovableEventHandle,
    priority_order,
)
from ember.engine.state import State

__all__ = [
    "CallableEventWithFilter",
    "Engine",
    "EventEnum",
    "Events",
    "EventsList",
    "Priority",
    "RemovableEventHandle",
    "State",
    "priority_order",
]
