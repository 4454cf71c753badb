"""Event filters (every / once / before / after / event_filter), ``|`` lists and custom events."""

from __future__ import annotations

import pytest

from ember.engine import CallableEventWithFilter, Engine, EventEnum, Events, EventsList


def fired_at(event, data=range(10), max_epochs=1, attr="iteration", **run_kwargs) -> list[int]:
    """Run an engine and return ``state.<attr>`` at each call of a handler added for ``event``."""
    engine = Engine(lambda e, b: b)
    hits: list[int] = []
    engine.add_event_handler(event, lambda e: hits.append(getattr(e.state, attr)))
    engine.run(list(data), max_epochs=max_epochs, **run_kwargs)
    return hits


# ---------------------------------------------------------------------- every / once


def test_every_on_iterations():
    assert fired_at(Events.ITERATION_COMPLETED(every=3)) == [3, 6, 9]
    assert fired_at(Events.ITERATION_STARTED(every=4), max_epochs=2) == [4, 8, 12, 16, 20]


def test_every_on_epochs():
    assert fired_at(Events.EPOCH_COMPLETED(every=2), data=[0], max_epochs=5, attr="epoch") == [2, 4]
    assert fired_at(Events.EPOCH_STARTED(every=3), data=[0], max_epochs=7, attr="epoch") == [3, 6]


def test_every_one_is_the_plain_event():
    event = Events.ITERATION_COMPLETED(every=1)
    assert event.filter is None
    assert fired_at(event, data=range(3)) == [1, 2, 3]


def test_once_int_and_list():
    assert fired_at(Events.ITERATION_COMPLETED(once=4)) == [4]
    assert fired_at(Events.ITERATION_COMPLETED(once=[2, 5, 7])) == [2, 5, 7]
    assert fired_at(Events.ITERATION_COMPLETED(once=(9, 1))) == [1, 9]
    assert fired_at(Events.EPOCH_COMPLETED(once=3), data=[0], max_epochs=5, attr="epoch") == [3]
    assert fired_at(Events.ITERATION_COMPLETED(once=11)) == []


def test_counter_for_get_batch_events_is_the_iteration_before_the_increment():
    # GET_BATCH_* fire before ``iteration`` is advanced for the batch being fetched (as in Ignite)
    assert fired_at(Events.GET_BATCH_STARTED(once=2), data=range(4)) == [2]
    # ... so `every` also matches the very first fetch, at iteration 0 (0 % every == 0, as in Ignite)
    assert fired_at(Events.GET_BATCH_COMPLETED(every=2), data=range(5)) == [0, 2, 4]


def test_started_and_completed_filters_count_epochs():
    engine = Engine(lambda e, b: b)
    counts: list[tuple[str, int]] = []
    engine.add_event_handler(
        Events.STARTED(event_filter=lambda e, n: counts.append(("STARTED", n)) or True), lambda: None
    )
    engine.add_event_handler(
        Events.COMPLETED(event_filter=lambda e, n: counts.append(("COMPLETED", n)) or True), lambda: None
    )
    engine.run([1, 2], max_epochs=3)
    assert counts == [("STARTED", 0), ("COMPLETED", 3)]


# ---------------------------------------------------------------------- before / after


def test_before_and_after():
    assert fired_at(Events.ITERATION_STARTED(after=3, before=7)) == [4, 5, 6]
    assert fired_at(Events.ITERATION_STARTED(after=8)) == [9, 10]
    assert fired_at(Events.ITERATION_STARTED(before=3)) == [1, 2]
    assert fired_at(Events.ITERATION_STARTED(after=0)) == list(range(1, 11))
    assert fired_at(Events.EPOCH_STARTED(after=1, before=4), data=[0], max_epochs=6, attr="epoch") == [2, 3]


def test_before_and_after_with_every():
    # Ignite's definition: the first count after `after` (default 0), then every `every` counts
    assert fired_at(Events.ITERATION_COMPLETED(every=2, after=3, before=9)) == [4, 6, 8]
    assert fired_at(Events.ITERATION_COMPLETED(every=3, before=8)) == [1, 4, 7]
    assert fired_at(Events.ITERATION_COMPLETED(every=5, after=8), data=range(26)) == [9, 14, 19, 24]
    assert fired_at(Events.ITERATION_COMPLETED(every=1, after=7)) == [8, 9, 10]
    assert fired_at(Events.ITERATION_STARTED(before=0)) == []


# ---------------------------------------------------------------------- event_filter


def test_event_filter_gets_the_engine_and_the_counter():
    engine = Engine(lambda e, b: b)
    calls = []

    def only_first_and_fifth(e, epoch):
        calls.append((e, epoch))
        return epoch in (1, 5)

    hits = []
    engine.add_event_handler(
        Events.EPOCH_STARTED(event_filter=only_first_and_fifth), lambda e: hits.append(e.state.epoch)
    )
    engine.run([0], max_epochs=6)
    assert hits == [1, 5]
    assert calls == [(engine, n) for n in range(1, 7)]


def test_filtered_handler_gets_extra_args():
    engine = Engine(lambda e, b: b)
    hits = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=2), lambda e, tag, scale=1: hits.append((tag, scale)), "t", scale=3
    )
    engine.run([1, 2, 3, 4])
    assert hits == [("t", 3), ("t", 3)]


# ---------------------------------------------------------------------- invalid arguments


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, r"`every` must be a positive integer, got 0"),
        ({"every": -2}, r"`every` must be a positive integer, got -2"),
        ({"every": 2.5}, r"`every` must be a positive integer, got 2.5"),
        ({"once": 0}, r"`once` must be a positive integer or a non-empty sequence of them, got 0"),
        ({"once": [1, -1]}, r"`once` must be .*, got \[1, -1\]"),
        ({"once": []}, r"non-empty"),
        ({"once": {1, 2}}, r"`once` must be .*sequence"),
        ({"before": -1}, r"`before` must be a non-negative integer, got -1"),
        ({"after": -1}, r"`after` must be a non-negative integer, got -1"),
        ({"after": 1.5}, r"`after` must be a non-negative integer, got 1.5"),
        ({"after": 1, "every": 0}, r"`every` must be a positive integer, got 0"),
        ({"once": 2, "every": 2}, r"give exactly one of"),
        ({"once": 2, "before": 5}, r"give exactly one of"),
        ({"event_filter": lambda e, n: True, "every": 2}, r"give exactly one of"),
        ({}, r"give exactly one of"),
        ({"event_filter": lambda engine: True}, r"must take \(engine, count\)"),
    ],
)
def test_invalid_filter_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Events.ITERATION_COMPLETED(**kwargs)


def test_non_callable_event_filter_raises_type_error():
    with pytest.raises(TypeError, match="`event_filter` must be callable"):
        Events.ITERATION_COMPLETED(event_filter=3)


# ---------------------------------------------------------------------- identity of events


def test_filtered_events_compare_equal_to_their_plain_event():
    filtered = Events.ITERATION_COMPLETED(every=2)
    assert isinstance(filtered, CallableEventWithFilter)
    assert filtered == Events.ITERATION_COMPLETED
    assert filtered != Events.ITERATION_STARTED
    assert filtered == "ITERATION_COMPLETED"
    assert hash(filtered) == hash(Events.ITERATION_COMPLETED)
    assert filtered.name == "ITERATION_COMPLETED"
    assert filtered.value == "iteration_completed"
    assert filtered.filter is not None
    assert Events.ITERATION_COMPLETED.filter is None  # filtering never mutates the member
    assert {Events.ITERATION_COMPLETED: 1}[filtered] == 1
    assert str(Events.EPOCH_COMPLETED) == repr(Events.EPOCH_COMPLETED) == "Events.EPOCH_COMPLETED"  # as Ignite
    assert repr(Events.EPOCH_COMPLETED(every=2)).startswith("Events.EPOCH_COMPLETED(filter=<function ")


def test_events_members_and_values_match_ignite():
    assert {e.name: e.value for e in Events} == {
        "STARTED": "started",
        "EPOCH_STARTED": "epoch_started",
        "GET_BATCH_STARTED": "get_batch_started",
        "GET_BATCH_COMPLETED": "get_batch_completed",
        "ITERATION_STARTED": "iteration_started",
        "ITERATION_COMPLETED": "iteration_completed",
        "EPOCH_COMPLETED": "epoch_completed",
        "COMPLETED": "completed",
        "EXCEPTION_RAISED": "exception_raised",
        "TERMINATE": "terminate",
        "TERMINATE_SINGLE_EPOCH": "terminate_single_epoch",
        "INTERRUPT": "interrupt",
        "DATALOADER_STOP_ITERATION": "dataloader_stop_iteration",
    }
    assert Events("started") is Events.STARTED


# ---------------------------------------------------------------------- | lists


def test_or_combines_filtered_and_plain_events_for_one_handler():
    events = Events.STARTED | Events.EPOCH_COMPLETED(every=2) | Events.ITERATION_COMPLETED(once=[3, 5])
    assert isinstance(events, EventsList)
    assert len(events) == 3
    engine = Engine(lambda e, b: b)
    hits = []
    handle = engine.add_event_handler(
        events, lambda e: hits.append((e.last_event_name.name, e.state.epoch, e.state.iteration))
    )
    engine.run([1, 2], max_epochs=4)
    assert hits == [
        ("STARTED", 0, 0),
        ("ITERATION_COMPLETED", 2, 3),
        ("EPOCH_COMPLETED", 2, 4),
        ("ITERATION_COMPLETED", 3, 5),
        ("EPOCH_COMPLETED", 4, 8),
    ]
    handle.remove()
    hits.clear()
    engine.run([1, 2], max_epochs=4)
    assert hits == []


def test_or_chains_and_lists_of_lists():
    left = Events.STARTED | Events.COMPLETED
    both = left | (Events.EPOCH_STARTED | Events.EPOCH_COMPLETED(every=2))
    assert [e.name for e in both] == ["STARTED", "COMPLETED", "EPOCH_STARTED", "EPOCH_COMPLETED"]
    assert len(left) == 2  # `|` builds a new list
    assert "EPOCH_COMPLETED" in repr(both)


def test_events_list_rejects_non_events():
    with pytest.raises(TypeError, match="an EventsList holds events, got 3"):
        Events.STARTED | 3


# ---------------------------------------------------------------------- custom events


class BackpropEvents(EventEnum):
    BACKWARD_STARTED = "backward_started"
    BACKWARD_COMPLETED = "backward_completed"


def test_custom_events_fire_from_the_process_function_and_filter_by_count():
    def step(engine, batch):
        engine.fire_event(BackpropEvents.BACKWARD_STARTED)
        engine.fire_event(BackpropEvents.BACKWARD_STARTED)  # twice per iteration
        engine.fire_event(BackpropEvents.BACKWARD_COMPLETED)
        return batch

    engine = Engine(step)
    engine.register_events(*BackpropEvents)
    every_third = []
    engine.add_event_handler(BackpropEvents.BACKWARD_STARTED(every=3), lambda e: every_third.append(e.state.iteration))
    completed = []

    @engine.on(BackpropEvents.BACKWARD_COMPLETED)
    def on_completed(engine):
        completed.append((engine.last_event_name, engine.state.iteration))

    engine.run([0, 1, 2, 3])
    # BACKWARD_STARTED fired 8 times: the 3rd and 6th firings happen in iterations 2 and 3
    assert every_third == [2, 3]
    assert completed == [(BackpropEvents.BACKWARD_COMPLETED, i) for i in (1, 2, 3, 4)]
    assert BackpropEvents.BACKWARD_STARTED.name == "BACKWARD_STARTED"
    assert BackpropEvents.BACKWARD_STARTED.value == "backward_started"


def test_custom_events_with_event_to_attr_filter_by_the_state_attribute():
    def step(engine, batch):
        engine.state.backward_steps += 2
        engine.fire_event(BackpropEvents.BACKWARD_COMPLETED)
        return batch

    engine = Engine(step)
    engine.register_events(*BackpropEvents, event_to_attr={BackpropEvents.BACKWARD_COMPLETED: "backward_steps"})
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "backward_steps", 0))
    hits = []
    engine.add_event_handler(BackpropEvents.BACKWARD_COMPLETED(every=4), lambda e: hits.append(e.state.backward_steps))
    once = []
    engine.add_event_handler(BackpropEvents.BACKWARD_COMPLETED(once=6), lambda e: once.append(e.state.iteration))
    engine.run(range(5))
    assert hits == [4, 8]
    assert once == [3]


def test_string_custom_events():
    engine = Engine(lambda e, b: e.fire_event("my_event"))
    engine.register_events("my_event")
    hits = []
    engine.add_event_handler("my_event", lambda e: hits.append(e.state.iteration))
    engine.run([1, 2, 3])
    assert hits == [1, 2, 3]


def test_unregistered_events_are_rejected():
    engine = Engine(lambda e, b: b)
    with pytest.raises(ValueError, match=r"unknown event .*BACKWARD_STARTED.*register_events"):
        engine.add_event_handler(BackpropEvents.BACKWARD_STARTED, lambda e: None)
    with pytest.raises(ValueError, match=r"unknown event 'nope'"):
        engine.add_event_handler("nope", lambda e: None)
    with pytest.raises(ValueError, match=r"register it with engine\.register_events"):
        engine.fire_event(BackpropEvents.BACKWARD_STARTED)
    with pytest.raises(TypeError, match="an event must be"):
        engine.add_event_handler(42, lambda e: None)


def test_register_events_validates_its_arguments():
    engine = Engine(lambda e, b: b)
    with pytest.raises(TypeError, match="an event must be"):
        engine.register_events(3.0)
    with pytest.raises(TypeError, match="event_to_attr values must be state attribute names"):
        engine.register_events("ev", event_to_attr={"ev": 1})


def test_events_without_a_state_counter_filter_by_how_often_they_fired():
    # DATALOADER_STOP_ITERATION fires at iterations 3, 6 and 9 here; every=2 keeps the 2nd firing
    assert fired_at(Events.DATALOADER_STOP_ITERATION(every=2), data=range(3), max_epochs=2, epoch_length=5) == [6]
