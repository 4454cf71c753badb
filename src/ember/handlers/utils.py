"""``global_step_from_engine``: name or log things by another engine's progress (Ignite's helper)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ember.engine.events import CallableEventWithFilter
from ember.engine.state import State


def global_step_from_engine(
    engine: Any, custom_event_name: Any = None, fallback_attr: str = "epoch"
) -> Callable[[Any, Any], int]:
    """A ``global_step_transform`` that reads ``engine``'s counter for the event being handled (or
    for ``custom_event_name``): ``state.iteration`` for iteration events, ``state.epoch`` for epoch
    events, a registered custom event's attribute, else ``state.<fallback_attr>``. Log or checkpoint
    an evaluator's results at the trainer's epoch::

        handler = Checkpoint(to_save, DiskSaver("ckpts"), score_name="accuracy",
                             global_step_transform=global_step_from_engine(trainer))
        evaluator.add_event_handler(Events.COMPLETED, handler)   # files named ..._<trainer epoch>_...
    """
    if not isinstance(fallback_attr, str):
        raise TypeError(f"fallback_attr must be the name of a state attribute, got {fallback_attr!r}")

    def global_step(_: Any, event_name: Any) -> int:
        event = custom_event_name if custom_event_name is not None else event_name
        key = event.name if isinstance(event, CallableEventWithFilter) else event
        if not isinstance(key, str) or (key not in State.event_to_attr and key not in engine.state.event_to_attr):
            return getattr(engine.state, fallback_attr)
        return engine.state.get_event_attrib_value(event)

    return global_step
