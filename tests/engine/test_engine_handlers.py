"""Adding, ordering, calling and removing handlers."""

from __future__ import annotations

import functools
import gc
from unittest.mock import MagicMock

import pytest

from ember.engine import Engine, Events, EventsList, Priority, RemovableEventHandle


def make_engine() -> Engine:
    return Engine(lambda e, b: b)


def appender(log: list, value):
    """A handler without arguments that appends ``value`` (a default argument would take the engine)."""
    return lambda: log.append(value)


# ---------------------------------------------------------------------- priorities


def test_higher_priority_first_ties_in_registration_order():
    engine = make_engine()
    order = []
    for name, priority in [("a", 0), ("b", 10), ("c", -5), ("d", 10), ("e", None), ("f", -5)]:
        engine.add_event_handler(Events.STARTED, appender(order, name), priority=priority)
    engine.run([1])
    assert order == ["b", "d", "a", "e", "c", "f"]


def test_on_decorator_takes_priority():
    engine = make_engine()
    order = []

    @engine.on(Events.ITERATION_COMPLETED)
    def user(engine):
        order.append("user")

    @engine.on(Events.ITERATION_COMPLETED, priority=Priority.METRICS)
    def metric(engine):
        order.append("metric")

    engine.run([1, 2])
    assert order == ["metric", "user", "metric", "user"]


def test_priority_levels_order_the_framework_roles():
    engine = make_engine()
    order = []
    levels = [
        Priority.EARLY_STOPPING,
        Priority.DEFAULT,
        Priority.TRAINER_LAST,
        Priority.CHECKPOINT,
        Priority.METRICS,
        Priority.LOGGER,
        Priority.TRAINER,
    ]
    for level in levels:
        engine.add_event_handler(Events.EPOCH_COMPLETED, appender(order, level.name), priority=level)
    engine.run([1])
    assert order == ["METRICS", "TRAINER", "DEFAULT", "LOGGER", "CHECKPOINT", "EARLY_STOPPING", "TRAINER_LAST"]


def test_default_priority_comes_from_the_handlers_ember_priority_attribute():
    engine = make_engine()
    order = []

    def plain(engine):
        order.append("plain")

    def logger(engine):
        order.append("logger")

    logger.ember_priority = Priority.LOGGER

    class Metric:
        ember_priority = Priority.METRICS

        def __call__(self, engine):
            order.append("metric")

    def overridden(engine):
        order.append("overridden")

    overridden.ember_priority = 1000

    engine.add_event_handler(Events.COMPLETED, logger)
    engine.add_event_handler(Events.COMPLETED, plain)
    engine.add_event_handler(Events.COMPLETED, Metric())
    engine.add_event_handler(Events.COMPLETED, overridden, priority=-1000)  # explicit beats the attribute
    engine.run([1])
    assert order == ["metric", "plain", "logger", "overridden"]


def test_a_priority_attribute_of_the_users_own_is_not_read():
    """``priority`` is a name users' objects already have (and a MagicMock has every attribute):
    Ember reads only ``priority=`` and ``ember_priority``."""
    engine = make_engine()
    order = []

    class Job:
        priority = "urgent"

        def __call__(self, engine):
            order.append("job")

    def numbered(engine):
        order.append("numbered")

    numbered.priority = 1000
    mock = MagicMock(side_effect=lambda engine: order.append("mock"))
    engine.add_event_handler(Events.STARTED, Job())
    engine.add_event_handler(Events.STARTED, mock)
    engine.add_event_handler(Events.STARTED, numbered)
    engine.run([1])
    assert order == ["job", "mock", "numbered"]
    assert mock.call_count == 1


@pytest.mark.parametrize("priority", ["high", 1.5, True])
def test_priority_must_be_an_int(priority):
    engine = make_engine()

    def h():
        pass

    with pytest.raises(TypeError, match=r"priority \(`priority=` or the handler's `ember_priority`\) must be an int"):
        engine.add_event_handler(Events.STARTED, h, priority=priority)
    h.ember_priority = priority
    with pytest.raises(TypeError, match="must be an int, got"):
        engine.add_event_handler(Events.STARTED, h)
    assert not engine.has_event_handler(h)


def test_handler_without_engine_argument_is_called_without_it():
    engine = make_engine()
    calls = []
    engine.add_event_handler(Events.STARTED, lambda: calls.append("no args"))
    engine.add_event_handler(Events.STARTED, lambda e: calls.append(e))
    engine.run([1])
    assert calls == ["no args", engine]


def test_extra_args_and_kwargs_are_passed_after_the_engine():
    engine = make_engine()
    calls = []

    def with_engine(engine, a, b=0, *, c):
        calls.append(("with_engine", engine, a, b, c))

    def without_engine(a, b):
        calls.append(("without_engine", a, b))

    engine.add_event_handler(Events.STARTED, with_engine, 1, c=3)
    engine.add_event_handler(Events.STARTED, with_engine, 1, 2, c=3)
    engine.add_event_handler(Events.STARTED, without_engine, "x", "y")
    engine.on(Events.STARTED, "z", b="w")(without_engine)
    engine.run([1])
    assert calls == [
        ("with_engine", engine, 1, 0, 3),
        ("with_engine", engine, 1, 2, 3),
        ("without_engine", "x", "y"),
        ("without_engine", "z", "w"),
    ]


def test_bound_methods_partials_and_callable_objects_work():
    engine = make_engine()
    calls = []

    class Logger:
        def log(self, engine, tag):
            calls.append(("method", engine.state.epoch, tag))

        def __call__(self, engine):
            calls.append(("call", engine.state.epoch))

    logger = Logger()
    engine.add_event_handler(Events.EPOCH_COMPLETED, logger.log, "t")
    engine.add_event_handler(Events.EPOCH_COMPLETED, logger)
    engine.add_event_handler(Events.EPOCH_COMPLETED, functools.partial(calls.append))  # partial(engine)
    engine.run([1], max_epochs=1)
    assert calls == [("method", 1, "t"), ("call", 1), engine]


def test_incompatible_handler_fails_at_add_time_naming_the_handler():
    engine = make_engine()

    def needs_three(engine, a, b):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"handler \S*needs_three\(engine, a, b\) for event ITERATION_COMPLETED"):
        engine.add_event_handler(Events.ITERATION_COMPLETED, needs_three)
    with pytest.raises(
        ValueError, match=r"cannot be called as \S*needs_three\(engine, 1, c=2\) nor without the engine"
    ):
        engine.add_event_handler(Events.ITERATION_COMPLETED, needs_three, 1, c=2)
    with pytest.raises(ValueError, match=r"needs_three"):
        engine.on(Events.STARTED)(needs_three)
    assert not engine.has_event_handler(needs_three)
    engine.run([1, 2])  # nothing was attached, nothing fails at fire time


def test_incompatible_handler_in_an_events_list_attaches_nothing():
    engine = make_engine()

    def no_args():
        pass

    def two_args(engine, exc):
        pass

    # no_args fits STARTED, but EXCEPTION_RAISED passes the exception: nothing may be attached
    with pytest.raises(ValueError, match=r"no_args.*EXCEPTION_RAISED"):
        engine.add_event_handler(Events.STARTED | Events.EXCEPTION_RAISED, no_args)
    # two_args fits EXCEPTION_RAISED (engine, exception), not ITERATION_COMPLETED
    with pytest.raises(ValueError, match=r"two_args.*ITERATION_COMPLETED"):
        engine.add_event_handler(Events.EXCEPTION_RAISED | Events.ITERATION_COMPLETED, two_args)
    assert not engine.has_event_handler(no_args)
    assert not engine.has_event_handler(two_args)


def test_non_callable_handler_and_empty_events_list():
    engine = make_engine()
    with pytest.raises(TypeError, match="handler must be callable, got 3"):
        engine.add_event_handler(Events.STARTED, 3)
    with pytest.raises(ValueError, match="empty EventsList"):
        engine.add_event_handler(EventsList(), lambda: None)


def test_on_returns_the_function_unchanged():
    engine = make_engine()

    def handler(engine):
        return "ok"

    assert engine.on(Events.STARTED)(handler) is handler
    assert engine.has_event_handler(handler, Events.STARTED)


# ---------------------------------------------------------------------- membership and removal


def test_has_event_handler():
    engine = make_engine()

    def h(engine):
        pass

    assert not engine.has_event_handler(h)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), h)
    assert engine.has_event_handler(h)
    assert engine.has_event_handler(h, Events.ITERATION_COMPLETED)
    assert engine.has_event_handler(h, Events.ITERATION_COMPLETED(every=5))  # same event, any filter
    assert not engine.has_event_handler(h, Events.ITERATION_STARTED)
    assert not engine.has_event_handler(h, "not_registered")


def test_remove_event_handler():
    engine = make_engine()
    calls = []

    def h(engine):
        calls.append(engine.state.iteration)

    engine.add_event_handler(Events.ITERATION_COMPLETED, h)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), h)
    engine.add_event_handler(Events.EPOCH_COMPLETED, h)
    engine.remove_event_handler(h, Events.ITERATION_COMPLETED)  # every registration for that event
    assert not engine.has_event_handler(h, Events.ITERATION_COMPLETED)
    assert engine.has_event_handler(h, Events.EPOCH_COMPLETED)
    engine.run([1, 2])
    assert calls == [2]  # only the EPOCH_COMPLETED one
    with pytest.raises(ValueError, match=r"handler .*h.* is not attached to event .*ITERATION_COMPLETED"):
        engine.remove_event_handler(h, Events.ITERATION_COMPLETED)
    with pytest.raises(ValueError, match="is not attached"):
        engine.remove_event_handler(h, "unknown_event")
    with pytest.raises(ValueError, match="is not attached"):
        engine.remove_event_handler(lambda: None, Events.EPOCH_COMPLETED)


def test_bound_methods_are_found_and_removed_by_equality():
    engine = make_engine()
    calls = []

    class Counter:
        def step(self, engine):
            calls.append(engine.state.iteration)

    counter = Counter()
    engine.add_event_handler(Events.ITERATION_COMPLETED, counter.step)
    assert engine.has_event_handler(counter.step, Events.ITERATION_COMPLETED)  # a new bound-method object
    engine.remove_event_handler(counter.step, Events.ITERATION_COMPLETED)
    engine.run([1, 2])
    assert calls == []


def test_handle_remove():
    engine = make_engine()
    calls = []
    handle = engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: calls.append(e.state.iteration))
    assert isinstance(handle, RemovableEventHandle)
    engine.run([1, 2])
    handle.remove()
    handle.remove()  # harmless
    engine.run([1, 2])
    assert calls == [1, 2]


def test_handle_removes_only_its_own_registration():
    engine = make_engine()
    calls = []

    def h(engine):
        calls.append(engine.state.iteration)

    first = engine.add_event_handler(Events.ITERATION_COMPLETED, h)
    engine.add_event_handler(Events.ITERATION_COMPLETED, h)
    first.remove()
    engine.run([1, 2])
    assert calls == [1, 2]
    assert engine.has_event_handler(h, Events.ITERATION_COMPLETED)


def test_handle_as_context_manager_attaches_for_one_block():
    engine = make_engine()
    calls = []

    def h(engine):
        calls.append(engine.state.epoch)

    with engine.add_event_handler(Events.EPOCH_COMPLETED | Events.STARTED, h) as handle:
        assert isinstance(handle, RemovableEventHandle)
        engine.run([1], max_epochs=2)
    assert calls == [0, 1, 2]
    assert not engine.has_event_handler(h)
    engine.run([1], max_epochs=2)
    assert calls == [0, 1, 2]


def test_handle_outliving_its_engine_is_harmless():
    engine = make_engine()
    handle = engine.add_event_handler(Events.STARTED, lambda: None)
    del engine
    gc.collect()
    handle.remove()


def test_handlers_added_or_removed_while_firing_take_effect_from_the_next_firing():
    engine = make_engine()
    calls = []

    def late(engine):
        calls.append(("late", engine.state.iteration))

    def adder(engine):
        calls.append(("adder", engine.state.iteration))
        if engine.state.iteration == 1:
            engine.add_event_handler(Events.ITERATION_COMPLETED, late)

    def remover(engine):
        calls.append(("remover", engine.state.iteration))
        engine.remove_event_handler(adder, Events.ITERATION_COMPLETED)
        engine.remove_event_handler(remover, Events.ITERATION_COMPLETED)

    def third(engine):
        calls.append(("third", engine.state.iteration))

    engine.add_event_handler(Events.ITERATION_COMPLETED, adder)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), remover)
    engine.add_event_handler(Events.ITERATION_COMPLETED, third)
    engine.run([1, 2, 3])
    assert calls == [
        ("adder", 1),
        ("third", 1),
        ("adder", 2),
        ("remover", 2),
        ("third", 2),  # removal during the firing does not skip the others of that firing
        ("late", 2),
        ("third", 3),
        ("late", 3),
    ]
