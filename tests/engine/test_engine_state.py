"""``State``: Ignite's public seam for an event's counter (``event_to_attr``,
``get_event_attrib_value``), custom events' counters per engine, and the cost of the hot loop."""

from __future__ import annotations

import sys

import pytest

from ember.engine import Engine, EventEnum, Events, State


class TBPTTEvents(EventEnum):
    TIME_ITERATION_COMPLETED = "time_iteration_completed"
    UNCOUNTED = "uncounted"


def test_built_in_events_map_to_iteration_or_epoch():
    engine = Engine(lambda e, b: b)
    engine.run([1, 2, 3], max_epochs=2)
    state = engine.state
    assert state.get_event_attrib_value(Events.ITERATION_COMPLETED) == 6
    assert state.get_event_attrib_value(Events.GET_BATCH_STARTED) == 6
    assert state.get_event_attrib_value(Events.EPOCH_COMPLETED) == 2
    assert state.get_event_attrib_value(Events.STARTED) == 2
    # a filtered event counts like its plain event; names work too
    assert state.get_event_attrib_value(Events.ITERATION_COMPLETED(every=2)) == 6
    assert state.get_event_attrib_value("EPOCH_STARTED") == 2
    assert state.event_to_attr[Events.ITERATION_STARTED] == "iteration"
    assert state.event_to_attr["COMPLETED"] == "epoch"


def test_an_event_without_a_counter_raises_naming_the_fix():
    state = State()
    for event in (Events.EXCEPTION_RAISED, "nope", TBPTTEvents.UNCOUNTED, 3):
        with pytest.raises(RuntimeError, match=r"no state attribute.*register_events"):
            state.get_event_attrib_value(event)


def test_custom_events_counters_belong_to_their_engine():
    engine = Engine(lambda e, b: b)
    engine.register_events(*TBPTTEvents, event_to_attr={TBPTTEvents.TIME_ITERATION_COMPLETED: "time_iteration"})
    engine.register_events("my_event", event_to_attr={"my_event": "my_count"})
    state = engine.state
    assert state.time_iteration == 0 and state.my_count == 0  # started at 0, as in Ignite
    state.time_iteration = 7
    assert state.get_event_attrib_value(TBPTTEvents.TIME_ITERATION_COMPLETED) == 7
    assert state.get_event_attrib_value(TBPTTEvents.TIME_ITERATION_COMPLETED(every=3)) == 7
    assert state.get_event_attrib_value("TIME_ITERATION_COMPLETED") == 7
    assert state.get_event_attrib_value("my_event") == 0
    with pytest.raises(RuntimeError):
        state.get_event_attrib_value(TBPTTEvents.UNCOUNTED)
    # neither another engine nor the class default sees them
    assert "TIME_ITERATION_COMPLETED" not in Engine(lambda e, b: b).state.event_to_attr
    assert "TIME_ITERATION_COMPLETED" not in State.event_to_attr
    assert "TIME_ITERATION_COMPLETED" not in State().event_to_attr


def test_registering_a_counter_keeps_a_value_the_state_already_has():
    engine = Engine(lambda e, b: b)
    engine.state.time_iteration = 5
    engine.register_events(*TBPTTEvents, event_to_attr={TBPTTEvents.TIME_ITERATION_COMPLETED: "time_iteration"})
    assert engine.state.time_iteration == 5


def test_a_bad_counter_name_registers_nothing():
    engine = Engine(lambda e, b: b)
    with pytest.raises(TypeError, match="state attribute names"):
        engine.register_events(*TBPTTEvents, event_to_attr={TBPTTEvents.TIME_ITERATION_COMPLETED: 3})
    with pytest.raises(ValueError, match="unknown event"):
        engine.add_event_handler(TBPTTEvents.TIME_ITERATION_COMPLETED, lambda: None)


def test_epoch_iteration_numbers_the_batches_of_each_epoch():
    seen = []
    engine = Engine(lambda e, b: seen.append(("process", e.state.epoch, e.state.epoch_iteration)))
    engine.add_event_handler(Events.GET_BATCH_STARTED, lambda e: seen.append(("get", e.state.epoch_iteration)))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(("end", e.state.epoch_iteration)))
    engine.run([10, 20], max_epochs=2)
    assert seen == [
        ("get", 0), ("process", 1, 1), ("get", 1), ("process", 1, 2), ("end", 2),
        ("get", 0), ("process", 2, 1), ("get", 1), ("process", 2, 2), ("end", 2),
    ]  # fmt: skip


def test_epoch_iteration_continues_from_a_saved_mid_epoch_position():
    engine = Engine(lambda e, b: e.state.epoch_iteration)
    engine.load_state_dict({"iteration": 5, "epoch": 2, "epoch_iteration": 2, "epoch_length": 3, "max_epochs": 2})
    assert engine.state.epoch_iteration == 0  # the epoch has not started again yet
    outputs = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    engine.run([0, 1, 2])
    assert outputs == [3] and engine.state.iteration == 6


def test_state_has_no_seed():
    # Ignite's `state.seed` was never used by Ember's engine
    assert not hasattr(State(), "seed")


def _python_calls_during(fn) -> int:
    """How many Python functions run inside ``fn()`` (C functions such as ``next`` not counted)."""
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(previous)
    return calls


@pytest.mark.parametrize("with_handlers", [False, True])
def test_an_iteration_calls_only_the_process_function_and_the_handlers(with_handlers):
    def step(engine, batch):
        return batch

    def on_iteration(engine):
        pass

    def calls_for(n: int) -> int:
        engine = Engine(step)
        if with_handlers:
            for event in (Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED, Events.ITERATION_STARTED):
                engine.add_event_handler(event, on_iteration)
            engine.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
        data = list(range(n))
        return _python_calls_during(lambda: engine.run(data, max_epochs=1))

    calls_for(1)  # warm up: a first run also fills caches (abc's isinstance checks of the data)
    per_iteration = (calls_for(20) - calls_for(10)) / 10
    assert per_iteration == (5 if with_handlers else 1)
