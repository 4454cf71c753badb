"""Run semantics taken from Ignite 0.5 (checked against the real Ignite in tests/compat/ignite):
continuing and restarting runs, runs without data, epoch cuts, check points at every event,
``max_iters``, the small API of events and handles, and the deterministic engine."""

from __future__ import annotations

import random

import pytest
import torch

from ember.engine import DeterministicEngine, Engine, Events, EventsList, RemovableEventHandle
from ember.engine.deterministic import keep_random_state


def recorded(engine: Engine, events=(Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.TERMINATE, Events.COMPLETED)):
    log: list[tuple[str, int, int]] = []
    for event in events:
        engine.add_event_handler(event, lambda e, *_, name=event.name, **__: log.append((name, e.state.epoch, e.state.iteration)))
    return log


def test_a_finished_run_is_continued_by_a_larger_max_epochs():
    batches = []
    engine = Engine(lambda e, b: batches.append((e.state.epoch, b)))
    engine.run([1, 2], max_epochs=2)
    engine.run([1, 2], max_epochs=4)  # the 4 new batches only, not a fresh run of 8
    assert batches == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (4, 1), (4, 2)]
    with pytest.raises(ValueError, match="`max_epochs`=3 is below the current epoch 4"):
        engine.run([1, 2], max_epochs=3)
    with pytest.raises(ValueError, match="max_iters=9 given to a run bounded by max_epochs=4"):
        engine.run([1, 2], max_iters=9)
    state = engine.run([1, 2], max_epochs=4)  # done at that bound: a new run
    assert (state.epoch, state.iteration) == (4, 8) and len(batches) == 16


def test_a_continued_run_keeps_its_epoch_length():
    engine = Engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    engine.run([1, 2, 3, 4], max_epochs=2)
    with pytest.raises(ValueError, match="`epoch_length`=2 differs from the epoch length 4"):
        engine.run([1, 2, 3, 4], epoch_length=2)
    state = engine.run([1, 2, 3, 4])  # a terminated run goes on with its next epoch, from the data's start
    assert (state.epoch, state.iteration) == (2, 7)


def test_run_without_data():
    seen = []
    engine = Engine(lambda e, b: seen.append(b))
    log = recorded(engine, [Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED, Events.EPOCH_COMPLETED])
    state = engine.run(None, max_epochs=2, epoch_length=3)
    assert seen == [None] * 6 and state.dataloader is None
    assert log == [("EPOCH_COMPLETED", 1, 3), ("EPOCH_COMPLETED", 2, 6)]  # no GET_BATCH_* without data


def test_terminate_epoch_can_skip_epoch_completed():
    engine = Engine(lambda e, b: b)
    log = recorded(engine, [Events.TERMINATE_SINGLE_EPOCH, Events.EPOCH_COMPLETED])
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch(skip_epoch_completed=True))
    engine.run([1, 2, 3], max_epochs=2)
    assert log == [("TERMINATE_SINGLE_EPOCH", 1, 2), ("EPOCH_COMPLETED", 2, 5)]
    assert engine.should_terminate_single_epoch is False


def test_terminate_single_epoch_handlers_may_take_iter_counter():
    engine = Engine(lambda e, b: b)
    got = []
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter: got.append(iter_counter))
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda e: got.append("plain"))
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda iter_counter: got.append(("no engine", iter_counter)))
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda e, tag, iter_counter: got.append((tag, iter_counter)), "t")
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda: got.append("nothing"))
    with pytest.raises(ValueError, match="TERMINATE_SINGLE_EPOCH cannot be called"):
        engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda e, a, b: None)
    engine.run([1, 2, 3])
    assert got == [2, "plain", ("no engine", 2), ("t", 2), "nothing"]


@pytest.mark.parametrize("event", [Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED, Events.ITERATION_STARTED])
def test_interrupt_inside_an_iteration_resumes_at_that_point(event):
    batches = []
    engine = Engine(lambda e, b: batches.append(b))
    log = recorded(engine, [Events.GET_BATCH_STARTED, Events.ITERATION_STARTED, Events.INTERRUPT])
    engine.add_event_handler(event(once=2), lambda e: e.interrupt())
    engine.run([1, 2, 3], max_epochs=1)
    paused_at = log[-1]
    assert paused_at[0] == "INTERRUPT"
    engine.run()
    assert batches == [1, 2, 3]
    names = [name for name, _, _ in log]
    assert names.count("GET_BATCH_STARTED") == 3 and names.count("ITERATION_STARTED") == 3  # nothing fired twice


def test_max_iters_resumed_from_a_state_dict_runs_only_what_is_left():
    first = Engine(lambda e, b: b)
    saved = []
    first.add_event_handler(Events.ITERATION_COMPLETED(once=5), lambda e: saved.append(e.state_dict()))
    first.run([1, 2, 3], max_iters=8)
    assert saved[0]["max_iters"] == 8 and "max_epochs" not in saved[0]
    count = []
    second = Engine(lambda e, b: count.append(b))
    second.load_state_dict(saved[0])
    state = second.run([1, 2, 3])
    assert len(count) == 3 and state.iteration == 8


def test_engine_built_without_a_process_function():
    engine = Engine(None)
    with pytest.raises(ValueError, match="no process function"):
        engine.run([1])
    engine.process_function = lambda e, b: b + 1
    engine.set_data([5])
    assert engine.run([1, 2]).output == 3
    with pytest.raises(ValueError, match=r"cannot be called as fn\(engine, batch\)"):
        engine.process_function = lambda batch: batch


def test_events_api_details():
    assert str(Events.STARTED) == repr(Events.STARTED) == "Events.STARTED"
    events = Events.STARTED | Events.COMPLETED(once=1)
    assert isinstance(events, EventsList) and events[0] == Events.STARTED and events[-1].filter is not None
    engine = Engine(lambda e, b: b)
    assert engine.has_registered_events(Events.STARTED) and engine.has_registered_events("COMPLETED")
    assert not engine.has_registered_events("custom") and not engine.has_registered_events(3)
    engine.register_events("custom")
    assert engine.has_registered_events("custom")

    def handler(e):
        pass

    handle = engine.add_event_handler(events, handler)
    assert isinstance(handle, RemovableEventHandle)
    assert handle.engine() is engine and handle.handler() is handler and handle.event_name is events
    handle.remove()
    assert not engine.has_event_handler(handler)


def test_deterministic_engine_repeats_its_dataflow():
    def step(engine, batch):
        return batch.tolist(), torch.rand(1).item(), random.random()

    def run_once():
        torch.manual_seed(5)
        outputs = []
        engine = DeterministicEngine(step)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
        loader = torch.utils.data.DataLoader(torch.arange(8), batch_size=3, shuffle=True)
        engine.run(loader, max_epochs=2)
        return outputs, engine.state_dict()

    (first, saved), (second, _) = run_once(), run_once()
    assert first == second and len(first) == 6
    assert "rng_states" in saved and len(saved["rng_states"]) >= 2
    with pytest.raises(ValueError, match="DeterministicEngine needs data"):
        DeterministicEngine(step).run(None, epoch_length=2)


def test_keep_random_state_leaves_the_generators_as_they_were():
    torch.manual_seed(1)
    random.seed(1)
    expected = (torch.rand(1).item(), random.random())
    torch.manual_seed(1)
    random.seed(1)
    drawn = keep_random_state(lambda: (torch.rand(3), random.random()))()
    assert drawn[0].shape == (3,)
    assert (torch.rand(1).item(), random.random()) == expected
