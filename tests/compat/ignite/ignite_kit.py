"""Differential testing against the real Ignite (``pytorch-ignite==0.5.5``, a test dependency): the
same scenario, written once, runs on ``ignite`` and on Ember, and the tests compare what a user
observes: event sequences ``(epoch, iteration, event)``, handler calls, ``state`` after each run,
state_dict round trips, raised errors.

A scenario takes a :class:`Side` (the names a user imports: ``side.engine.Engine``,
``side.engine.Events``, ``side.idist``, ...) so its code is the same on both sides but for the imports.
Where Ember deliberately differs, the test says so and pins both behaviours (the Ignite migration
guide lists them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

_MODULES = {
    "engine": ("ignite.engine", "ember.engine"),
    "deterministic": ("ignite.engine.deterministic", "ember.engine.deterministic"),
    "idist": ("ignite.distributed", "ember.distributed"),
    "handlers": ("ignite.handlers", "ember.handlers"),
    "metrics": ("ignite.metrics", "ember.metrics"),
}


@dataclass(frozen=True)
class Side:
    """One framework as a user imports it: ``side.engine`` is ``ignite.engine`` or ``ember.engine``."""

    name: str

    def module(self, what: str) -> ModuleType:
        ignite_name, ember_name = _MODULES[what]
        return importlib.import_module(ignite_name if self.name == "ignite" else ember_name)

    @property
    def engine(self) -> ModuleType:
        return self.module("engine")

    @property
    def deterministic(self) -> ModuleType:
        return self.module("deterministic")

    @property
    def idist(self) -> ModuleType:
        return self.module("idist")

    def __repr__(self) -> str:
        return self.name


IGNITE = Side("ignite")
EMBER = Side("ember")
SIDES = (IGNITE, EMBER)

#: the events an Ignite engine fires by itself, in the order of ``Events``
ENGINE_EVENTS = (
    "STARTED", "EPOCH_STARTED", "GET_BATCH_STARTED", "GET_BATCH_COMPLETED", "ITERATION_STARTED",
    "ITERATION_COMPLETED", "EPOCH_COMPLETED", "COMPLETED", "EXCEPTION_RAISED", "TERMINATE",
    "TERMINATE_SINGLE_EPOCH", "INTERRUPT", "DATALOADER_STOP_ITERATION",
)  # fmt: skip


def on_both(scenario: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``scenario(side, ...)`` on Ignite, then on Ember."""
    return scenario(IGNITE, *args, **kwargs), scenario(EMBER, *args, **kwargs)


def assert_same(scenario: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``scenario`` on both sides and require the same observations; returns them."""
    ignite_seen, ember_seen = on_both(scenario, *args, **kwargs)
    assert ember_seen == ignite_seen, f"Ember differs from Ignite\nignite: {ignite_seen!r}\nember:  {ember_seen!r}"
    return ember_seen


def record_events(side: Side, engine: Any, log: list, events: Iterable[str] = ENGINE_EVENTS) -> None:
    """Append ``(epoch, iteration, event)`` to ``log`` at every firing of ``events`` (EXCEPTION_RAISED
    adds the exception's type, TERMINATE_SINGLE_EPOCH the ``iter_counter`` it passes)."""
    Events = side.engine.Events
    for name in events:
        event = getattr(Events, name)
        if name == "EXCEPTION_RAISED":
            engine.add_event_handler(
                event, lambda e, exc: log.append((e.state.epoch, e.state.iteration, "EXCEPTION_RAISED", type(exc).__name__))
            )
        elif name == "TERMINATE_SINGLE_EPOCH":

            def on_cut(e: Any, iter_counter: int | None = None) -> None:
                log.append((e.state.epoch, e.state.iteration, "TERMINATE_SINGLE_EPOCH", iter_counter))

            engine.add_event_handler(event, on_cut)
        else:
            engine.add_event_handler(event, (lambda n: lambda e: log.append((e.state.epoch, e.state.iteration, n)))(name))


#: the ``State`` attributes both frameworks have (Ember adds ``epoch_iteration``; Ignite has ``seed``)
STATE_FIELDS = ("iteration", "epoch", "epoch_length", "max_epochs", "max_iters", "output", "batch", "metrics")


def snapshot(state: Any, fields: Iterable[str] = STATE_FIELDS) -> dict[str, Any]:
    """The user-visible values of ``state`` (``times`` by its keys only: they are durations)."""
    out = {f: getattr(state, f) for f in fields}
    out["times"] = sorted(k for k, v in state.times.items() if v is not None)
    return out


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", fn())`` or ``("raises", exception type name)``: error paths compare by type."""
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("raises", type(exc).__name__)


class Run:
    """A recorded engine on one side: ``process_function`` logs ``("P", epoch, iteration, batch)``,
    every engine event logs ``(epoch, iteration, event)``; :meth:`run` appends the state after it."""

    def __init__(self, side: Side, process: Callable[[Any, Any], Any] | None = None, events: Iterable[str] = ENGINE_EVENTS):
        self.side = side
        self.log: list[tuple] = []
        self.Events = side.engine.Events

        def step(engine: Any, batch: Any) -> Any:
            if engine.state.iteration > 1000:
                raise RuntimeError("runaway run: more than 1000 iterations")
            self.log.append(("P", engine.state.epoch, engine.state.iteration, batch))
            return process(engine, batch) if process is not None else batch

        self.engine = side.engine.Engine(step)
        record_events(side, self.engine, self.log, events)

    def on(self, event: Any, fn: Callable[..., Any]) -> Run:
        self.engine.add_event_handler(event, fn)
        return self

    def run(self, *args: Any, **kwargs: Any) -> Run:
        result = outcome(lambda: snapshot(self.engine.run(*args, **kwargs)))
        self.log.append(("RUN",) + ((result[1]["epoch"], result[1]["iteration"]) if result[0] == "ok" else result))
        return self
