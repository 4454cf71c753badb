"""Ember's event engine (Ignite-compatible): ``Engine``, ``Events``, ``State`` and filters.

See :mod:`ember.engine.engine` for the map of where each event fires.
"""

from ember.engine.deterministic import DeterministicEngine
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
from ember.engine.supervised import (
    create_supervised_evaluator,
    create_supervised_trainer,
    supervised_evaluation_step,
    supervised_evaluation_step_amp,
    supervised_training_step,
    supervised_training_step_amp,
    supervised_training_step_apex,
    supervised_training_step_tpu,
)

__all__ = [
    "CallableEventWithFilter",
    "DeterministicEngine",
    "Engine",
    "EventEnum",
    "Events",
    "EventsList",
    "Priority",
    "RemovableEventHandle",
    "State",
    "create_supervised_evaluator",
    "create_supervised_trainer",
    "priority_order",
    "supervised_evaluation_step",
    "supervised_evaluation_step_amp",
    "supervised_training_step",
    "supervised_training_step_amp",
    "supervised_training_step_apex",
    "supervised_training_step_tpu",
]
