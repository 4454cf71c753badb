"""The engine's API surface against the real Ignite: event names and their text, ``EventsList``,
``RemovableEventHandle``, ``State``, registration and its errors, handler signatures and
priority (which must not break plain handlers such as a ``MagicMock``)."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from ignite_kit import EMBER, IGNITE, Run, assert_same, on_both, outcome


def test_every_name_of_ignite_engine_exists_in_ember_engine():
    missing = [name for name in IGNITE.engine.__all__ if not hasattr(EMBER.engine, name)]
    assert missing == []
    # (Ember lists them in the order the loop fires them)
    assert {(e.name, e.value) for e in EMBER.engine.Events} == {(e.name, e.value) for e in IGNITE.engine.Events}


def test_event_text():
    def scenario(side):
        Events = side.engine.Events
        filtered = Events.ITERATION_COMPLETED(every=2)
        return (
            str(Events.STARTED), repr(Events.STARTED), f"{Events.EPOCH_COMPLETED}", Events.STARTED.name,
            Events.STARTED.value, str(filtered).startswith("Events.ITERATION_COMPLETED(filter=<function "),
            repr(filtered).startswith("Events.ITERATION_COMPLETED(filter=<function "),
            Events.STARTED == "STARTED", Events.STARTED == "started", filtered == Events.ITERATION_COMPLETED,
            hash(filtered) == hash(Events.ITERATION_COMPLETED), filtered in [Events.ITERATION_COMPLETED],
            isinstance(filtered, Events), isinstance(filtered, side.engine.CallableEventWithFilter),
            Events.ITERATION_COMPLETED(every=1).filter is None,
        )  # fmt: skip

    assert_same(scenario)


def test_custom_event_text():
    """Deliberate difference: Ignite's repr of a custom event says ``Events.`` whatever its class."""

    def scenario(side):
        class Custom(side.engine.EventEnum):
            PING = "ping"

        return str(Custom.PING), repr(Custom.PING), Custom.PING.name, Custom.PING.value

    ignite_seen, ember_seen = on_both(scenario)
    assert ember_seen == ("Custom.PING", "Custom.PING", "PING", "ping")
    assert ignite_seen == ("Custom.PING", "Events.PING", "PING", "ping")


def test_events_list():
    def scenario(side):
        Events = side.engine.Events
        events = Events.STARTED | Events.COMPLETED(once=1) | Events.EPOCH_STARTED
        return len(events), str(events[0]), str(events[-1]), events[1].name, [e.name for e in events], outcome(lambda: events[5])

    assert_same(scenario)


def test_removable_event_handle():
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        Events = side.engine.Events
        seen = []

        def handler(e):
            seen.append(e.state.epoch)

        handle = engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
        facts = [handle.engine() is engine, handle.handler() is handler, handle.event_name == Events.EPOCH_COMPLETED]
        engine.run([1], max_epochs=2)
        handle.remove()
        handle.remove()  # twice is harmless
        facts.append(engine.has_event_handler(handler))
        with engine.add_event_handler(Events.EPOCH_COMPLETED | Events.STARTED, handler) as both:
            facts.append(len(both.event_name))
            engine.run([1], max_epochs=2)
        facts.append(engine.has_event_handler(handler))
        engine.run([1], max_epochs=2)
        return facts, seen

    assert_same(scenario)


def test_registered_events():
    def scenario(side):
        class Custom(side.engine.EventEnum):
            PING = "ping"

        class Other(side.engine.EventEnum):
            PONG = "pong"

        engine = side.engine.Engine(lambda e, b: b)
        Events = side.engine.Events
        before = [engine.has_registered_events(Events.STARTED), engine.has_registered_events("STARTED"),
                  engine.has_registered_events(Custom.PING), engine.has_registered_events("unknown")]  # fmt: skip
        engine.register_events(*Custom, "my_event")
        after = [engine.has_registered_events(Custom.PING), engine.has_registered_events("my_event"),
                 engine.has_registered_events(Other.PONG)]  # fmt: skip
        fired = []
        engine.add_event_handler("my_event", lambda e: fired.append("my_event"))
        engine.add_event_handler(Custom.PING, lambda e, x: fired.append(x), 5)
        engine.fire_event("my_event")
        engine.fire_event(Custom.PING)
        errors = [
            outcome(lambda: engine.add_event_handler(Other.PONG, print)),
            outcome(lambda: engine.fire_event(Other.PONG)),
            outcome(lambda: engine.register_events(42)),
            outcome(lambda: engine.remove_event_handler(print, Events.STARTED)),
        ]
        return before, after, fired, errors, str(engine.last_event_name)

    assert_same(scenario)


def test_state_get_event_attrib_value():
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        Events = side.engine.Events
        engine.run([1, 2, 3], max_epochs=2)
        state = engine.state
        values = [state.get_event_attrib_value(e) for e in (Events.ITERATION_COMPLETED, Events.GET_BATCH_STARTED,
                  Events.EPOCH_STARTED, Events.STARTED, Events.COMPLETED, Events.ITERATION_STARTED(every=2))]  # fmt: skip
        return values, outcome(lambda: state.get_event_attrib_value(Events.TERMINATE)), str(engine.last_event_name)

    assert_same(scenario)


def test_state_attributes():
    """Deliberate difference: Ember's State has ``epoch_iteration`` (the position in the epoch) and a
    per-engine ``event_to_attr``; ``seed`` exists only on a DeterministicEngine's state."""
    ignite_names, ember_names = on_both(lambda side: set(vars(side.engine.State())))
    assert ember_names - ignite_names == {"epoch_iteration", "event_to_attr"}
    assert ignite_names - ember_names == {"seed"}
    assert_same(lambda side: {k: v for k, v in vars(side.engine.State(custom=3)).items() if k not in ("seed", "epoch_iteration", "event_to_attr")})


@pytest.mark.parametrize(
    "handler",
    [lambda e: None, lambda: None, lambda e, a, b=2: None, lambda *args: None, lambda e, *, k: None, print],
    ids=["engine", "no-args", "extra", "varargs", "kwonly", "builtin"],
)
def test_handler_signatures(handler):
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        return outcome(lambda: engine.add_event_handler(side.engine.Events.STARTED, handler) and None)

    assert_same(scenario)


def test_process_function_checks():
    """Deliberate difference: ``Engine(None)`` is allowed in Ember (the step is set later through
    ``engine.process_function``, as the Trainer does) and ``run()`` raises without one; Ignite raises
    at construction. A function that cannot take (engine, batch) is rejected by both."""
    assert_same(lambda side: outcome(lambda: side.engine.Engine(lambda: 0) and None))
    assert outcome(lambda: IGNITE.engine.Engine(None)) == ("raises", "ValueError")
    engine = EMBER.engine.Engine(None)
    assert outcome(lambda: engine.run([1])) == ("raises", "ValueError")
    engine.process_function = lambda e, b: b * 2
    engine.set_data([3, 4])
    assert engine.run([1, 2]).output == 4


@pytest.mark.parametrize("kind", ["mock", "magic-mock", "priority-attribute", "string-priority"])
def test_handlers_with_a_priority_attribute_of_their_own(kind):
    """Handlers whose objects happen to have a ``priority`` attribute (a mock, a user's class) run as
    plain handlers, in the order they were added."""

    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        order = []

        class Job:
            def __init__(self, name, priority):
                self.name, self.priority = name, priority

            def __call__(self, engine):
                order.append(self.name)

        first = {"mock": MagicMock(), "magic-mock": MagicMock(priority=MagicMock()),
                 "priority-attribute": Job("job", 1000), "string-priority": Job("job", "high")}[kind]  # fmt: skip
        if isinstance(first, MagicMock):
            first.side_effect = lambda *a, **k: order.append("mock")
        engine.add_event_handler(side.engine.Events.STARTED, lambda e: order.append("plain"))
        engine.add_event_handler(side.engine.Events.STARTED, first)
        engine.run([1])
        return order

    assert_same(scenario)


def test_mock_handler_calls():
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: b)
        handler = MagicMock()
        engine.add_event_handler(side.engine.Events.EPOCH_COMPLETED, handler, 1, key="v")
        engine.run([1, 2], max_epochs=3)
        return handler.call_count, [(c.args[0] is engine, c.args[1:], c.kwargs) for c in handler.call_args_list]

    assert_same(scenario)


def test_priority_is_an_ember_addition():
    """Deliberate difference: ``priority=`` is Ember's keyword (Ignite passes it to the handler as a
    keyword argument), and ``ember_priority`` the attribute Ember reads."""
    engine = EMBER.engine.Engine(lambda e, b: b)
    order = []

    class Late:
        ember_priority = -5

        def __call__(self, engine):
            order.append("late")

    engine.add_event_handler(EMBER.engine.Events.STARTED, Late())
    engine.add_event_handler(EMBER.engine.Events.STARTED, lambda e: order.append("plain"))
    engine.add_event_handler(EMBER.engine.Events.STARTED, lambda e: order.append("first"), priority=10)
    engine.run([1])
    assert order == ["first", "plain", "late"]

    ignite_engine = IGNITE.engine.Engine(lambda e, b: b)
    ignite_engine.add_event_handler(IGNITE.engine.Events.STARTED, lambda e, priority: order.append(priority), priority=10)
    ignite_engine.run([1])
    assert order[-1] == 10


def test_exception_raised_handler_arguments():
    def scenario(side):
        engine = side.engine.Engine(lambda e, b: 1 / 0)
        seen = []
        engine.add_event_handler(side.engine.Events.EXCEPTION_RAISED, lambda e, exc, tag: seen.append((e.state.iteration, type(exc).__name__, tag)), "t")
        engine.run([1, 2])
        return seen

    assert_same(scenario)


def test_terminate_single_epoch_handlers_get_iter_counter():
    """Handlers taking ``iter_counter`` get it on both sides. Deliberate difference: Ignite calls every
    TERMINATE_SINGLE_EPOCH handler with ``iter_counter=`` and so fails on ``def handler(engine)``;
    Ember calls such handlers without it."""

    def scenario(side, plain):
        run = Run(side, events=[])
        seen = []
        run.on(run.Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
        run.on(run.Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter: seen.append(("kw", iter_counter)))
        run.on(run.Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter=None, **kw: seen.append(("default", iter_counter)))
        if plain:
            run.on(run.Events.TERMINATE_SINGLE_EPOCH, lambda e: seen.append("plain"))
        return outcome(lambda: run.engine.run([1, 2, 3], max_epochs=2) and None), seen

    assert_same(scenario, plain=False)
    (ignite_outcome, _), (ember_outcome, ember_seen) = on_both(scenario, plain=True)
    assert ignite_outcome == ("raises", "TypeError")
    assert ember_outcome == ("ok", None) and ember_seen[-1] == "plain"
