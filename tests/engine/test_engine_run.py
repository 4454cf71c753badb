"""Engine.run: where events fire, what state holds, how data of any shape is walked."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from ember.engine import Engine, Events, State

ALL_EVENTS = [e for e in Events if e is not Events.EXCEPTION_RAISED]


def record(engine: Engine, events=ALL_EVENTS) -> list[tuple[str, int, int]]:
    """Log (event name, epoch, iteration) for each firing of ``events``."""
    log: list[tuple[str, int, int]] = []
    for event in events:
        engine.add_event_handler(event, lambda e, name=event.name: log.append((name, e.state.epoch, e.state.iteration)))
    return log


def names(log) -> list[str]:
    return [name for name, _, _ in log]


class Reiterable:
    """Re-iterable data without ``__len__``: every ``iter()`` starts a new generator."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        yield from range(self.n)


def test_full_event_order_for_two_epochs_over_a_list():
    engine = Engine(lambda e, batch: batch * 10)
    log = record(engine)
    engine.run([1, 2], max_epochs=2)
    assert log == [
        ("STARTED", 0, 0),
        ("EPOCH_STARTED", 1, 0),
        ("GET_BATCH_STARTED", 1, 0),
        ("GET_BATCH_COMPLETED", 1, 0),
        ("ITERATION_STARTED", 1, 1),
        ("ITERATION_COMPLETED", 1, 1),
        ("GET_BATCH_STARTED", 1, 1),
        ("GET_BATCH_COMPLETED", 1, 1),
        ("ITERATION_STARTED", 1, 2),
        ("ITERATION_COMPLETED", 1, 2),
        ("EPOCH_COMPLETED", 1, 2),
        ("EPOCH_STARTED", 2, 2),
        # the iterator is kept across epochs (Ignite): epoch 2 finds it exhausted and restarts it
        ("GET_BATCH_STARTED", 2, 2),
        ("DATALOADER_STOP_ITERATION", 2, 2),
        ("GET_BATCH_COMPLETED", 2, 2),
        ("ITERATION_STARTED", 2, 3),
        ("ITERATION_COMPLETED", 2, 3),
        ("GET_BATCH_STARTED", 2, 3),
        ("GET_BATCH_COMPLETED", 2, 3),
        ("ITERATION_STARTED", 2, 4),
        ("ITERATION_COMPLETED", 2, 4),
        ("EPOCH_COMPLETED", 2, 4),
        ("COMPLETED", 2, 4),
    ]


def test_state_after_run():
    data = [1, 2, 3]
    engine = Engine(lambda e, batch: batch * 10)
    state = engine.run(data, max_epochs=2)
    assert state is engine.state
    assert isinstance(state, State)
    assert (state.iteration, state.epoch, state.epoch_length, state.max_epochs, state.max_iters) == (6, 2, 3, 2, None)
    assert state.output == 30
    assert state.batch == 3
    assert state.dataloader is data
    assert set(state.times) == {"EPOCH_COMPLETED", "COMPLETED"}
    assert all(isinstance(t, float) and t >= 0 for t in state.times.values())
    assert state.times["COMPLETED"] >= state.times["EPOCH_COMPLETED"]
    assert engine.last_event_name == Events.COMPLETED
    assert "iteration=6" in repr(state)


def test_process_function_gets_engine_and_each_batch_and_output_is_visible_to_handlers():
    seen = []

    def step(engine, batch):
        seen.append((engine.state.epoch, engine.state.iteration, batch))
        return batch + 100

    engine = Engine(step)
    outputs = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    engine.run([0, 1], max_epochs=2)
    assert seen == [(1, 1, 0), (1, 2, 1), (2, 3, 0), (2, 4, 1)]
    assert outputs == [100, 101, 100, 101]


def test_default_is_one_epoch():
    state = Engine(lambda e, b: b).run([1, 2, 3])
    assert (state.epoch, state.iteration, state.max_epochs) == (1, 3, 1)


def test_iteration_started_handler_can_replace_the_batch():
    engine = Engine(lambda e, batch: batch)

    @engine.on(Events.ITERATION_STARTED)
    def double(engine):
        engine.state.batch = engine.state.batch * 2

    outputs = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    engine.run([1, 2, 3])
    assert outputs == [2, 4, 6]


@pytest.mark.parametrize(
    ("max_iters", "expected_batches", "expected_epoch", "expected_events"),
    [
        # a partial last epoch ends as Ignite's does: TERMINATE, no EPOCH_COMPLETED
        (6, [0, 1, 2, 3, 0, 1], 2, ["STARTED", "EPOCH_COMPLETED", "TERMINATE", "COMPLETED"]),
        (8, [0, 1, 2, 3] * 2, 2, ["STARTED", "EPOCH_COMPLETED", "EPOCH_COMPLETED", "COMPLETED"]),
        (3, [0, 1, 2], 1, ["STARTED", "TERMINATE", "COMPLETED"]),
    ],
)
def test_max_iters(max_iters, expected_batches, expected_epoch, expected_events):
    batches = []
    engine = Engine(lambda e, b: batches.append(b))
    log = record(engine, [Events.STARTED, Events.EPOCH_COMPLETED, Events.TERMINATE, Events.COMPLETED])
    state = engine.run([0, 1, 2, 3], max_iters=max_iters)
    assert batches == expected_batches
    assert (state.iteration, state.epoch, state.max_iters) == (max_iters, expected_epoch, max_iters)
    assert state.max_epochs is None  # a run bounded by iterations (as Ignite)
    assert names(log) == expected_events


def test_max_iters_with_data_of_unknown_length():
    batches = []
    state = Engine(lambda e, b: batches.append(b)).run(Reiterable(3), max_iters=7)
    assert batches == [0, 1, 2, 0, 1, 2, 0]
    assert (state.iteration, state.epoch, state.epoch_length, state.max_epochs) == (7, 3, 3, 3)


def test_epoch_length_smaller_than_data_continues_the_iterator_across_epochs():
    per_epoch: dict[int, list[int]] = {}
    engine = Engine(lambda e, b: per_epoch.setdefault(e.state.epoch, []).append(b))
    log = record(engine, [Events.DATALOADER_STOP_ITERATION, Events.EPOCH_COMPLETED])
    state = engine.run([0, 1, 2, 3, 4], max_epochs=4, epoch_length=2)
    assert per_epoch == {1: [0, 1], 2: [2, 3], 3: [4, 0], 4: [1, 2]}
    assert log == [
        ("EPOCH_COMPLETED", 1, 2),
        ("EPOCH_COMPLETED", 2, 4),
        ("DATALOADER_STOP_ITERATION", 3, 5),
        ("EPOCH_COMPLETED", 3, 6),
        ("EPOCH_COMPLETED", 4, 8),
    ]
    assert (state.iteration, state.epoch_length) == (8, 2)


def test_epoch_length_larger_than_data_restarts_the_data():
    batches = []
    engine = Engine(lambda e, b: batches.append(b))
    log = record(engine, [Events.DATALOADER_STOP_ITERATION, Events.GET_BATCH_STARTED])
    state = engine.run([0, 1, 2], max_epochs=2, epoch_length=5)
    assert batches == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert [(e, i) for n, e, i in log if n == "DATALOADER_STOP_ITERATION"] == [(1, 3), (2, 6), (2, 9)]
    # GET_BATCH_STARTED is not fired a second time for the retried fetch after a restart
    assert names(log).count("GET_BATCH_STARTED") == 10
    assert (state.iteration, state.epoch, state.epoch_length) == (10, 2, 5)


def test_data_without_len_learns_epoch_length_at_the_end_of_the_first_epoch():
    engine = Engine(lambda e, b: b)
    lengths_during_epoch = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: lengths_during_epoch.append(e.state.epoch_length))
    lengths_at_epoch_end = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: lengths_at_epoch_end.append(e.state.epoch_length))
    log = record(engine, [Events.DATALOADER_STOP_ITERATION])
    state = engine.run(Reiterable(3), max_epochs=3)
    assert lengths_during_epoch == [None, None, None, 3, 3, 3, 3, 3, 3]
    assert lengths_at_epoch_end == [3, 3, 3]
    # as Ignite: epoch 1 ends on the data's end and leaves the iterator exhausted, so epoch 2 starts
    # by restarting it; epoch 2 stops after 3 batches without exhausting it, and epoch 3 restarts it
    assert log == [("DATALOADER_STOP_ITERATION", 2, 3), ("DATALOADER_STOP_ITERATION", 3, 6)]
    assert (state.iteration, state.epoch, state.epoch_length) == (9, 3, 3)


def test_one_shot_generator_runs_out_with_a_warning():
    engine = Engine(lambda e, b: b)
    log = record(engine, [Events.DATALOADER_STOP_ITERATION, Events.EPOCH_COMPLETED, Events.TERMINATE, Events.COMPLETED])
    with pytest.warns(UserWarning, match="data ran out at iteration 3") as caught:
        state = engine.run((i for i in range(3)), max_epochs=3)
    # as Ignite: the epochs after it are empty; the warning comes while the run is not done yet
    assert len(caught) == 1
    assert (state.iteration, state.epoch, state.epoch_length) == (3, 3, 3)
    assert names(log) == ["EPOCH_COMPLETED"] + ["DATALOADER_STOP_ITERATION", "EPOCH_COMPLETED"] * 2 + ["COMPLETED"]


def test_torch_dataloader_sets_epoch_length_from_len():
    loader = DataLoader(TensorDataset(torch.arange(10.0)), batch_size=4)
    sizes = []
    state = Engine(lambda e, batch: sizes.append(len(batch[0]))).run(loader, max_epochs=2)
    assert sizes == [4, 4, 2] * 2
    assert (state.epoch_length, state.iteration) == (3, 6)


def test_dataloader_over_an_iterable_dataset_without_len():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    loader = DataLoader(Stream(), batch_size=None)
    batches = []
    state = Engine(lambda e, b: batches.append(int(b))).run(loader, max_epochs=2)
    assert batches == [0, 1, 2, 0, 1, 2]
    assert (state.epoch_length, state.iteration) == (3, 6)


def test_empty_data_is_a_clear_error():
    with pytest.raises(ValueError, match="data is empty"):
        Engine(lambda e, b: b).run([])
    with pytest.raises(ValueError, match="data yielded no batch"):
        Engine(lambda e, b: b).run(Reiterable(0))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_epochs": -1}, ValueError, r"`max_epochs` must be a positive integer or None, got -1"),
        ({"max_epochs": 0}, ValueError, r"`max_epochs`.*got 0"),
        ({"max_epochs": 1.5}, ValueError, r"`max_epochs`.*got 1.5"),
        ({"max_epochs": True}, ValueError, r"`max_epochs`.*got True"),
        ({"max_iters": 0}, ValueError, r"`max_iters`.*got 0"),
        ({"epoch_length": 0}, ValueError, r"`epoch_length`.*got 0"),
        ({"max_epochs": 2, "max_iters": 5}, ValueError, r"`max_epochs` or `max_iters`, not both"),
    ],
)
def test_run_argument_validation(kwargs, error, match):
    engine = Engine(lambda e, b: b)
    with pytest.raises(error, match=match):
        engine.run([1, 2], **kwargs)
    assert engine.state.iteration == 0


def test_run_rejects_non_iterable_data_and_missing_data():
    engine = Engine(lambda e, b: b)
    with pytest.raises(TypeError, match=r"data must be iterable.*int"):
        engine.run(5)
    with pytest.raises(ValueError, match="without data needs `epoch_length`"):
        engine.run()


def test_engine_needs_a_callable_process_function():
    with pytest.raises(TypeError, match="process_function must be callable"):
        Engine("not a function")


def test_a_new_run_after_a_finished_run_restarts_the_counters():
    engine = Engine(lambda e, b: b)
    log = record(engine, [Events.STARTED, Events.EPOCH_STARTED])
    engine.run([1, 2, 3], max_epochs=2)
    assert (engine.state.iteration, engine.state.epoch) == (6, 2)
    engine.state.metrics["x"] = 1.0
    state = engine.run([7, 8], max_epochs=2)
    assert (state.iteration, state.epoch, state.epoch_length, state.output) == (4, 2, 2, 8)
    assert state.metrics == {"x": 1.0}  # as Ignite: attached metrics overwrite their own values
    assert log == [
        ("STARTED", 0, 0),
        ("EPOCH_STARTED", 1, 0),
        ("EPOCH_STARTED", 2, 3),
        ("STARTED", 0, 0),
        ("EPOCH_STARTED", 1, 0),
        ("EPOCH_STARTED", 2, 2),
    ]


def test_set_data_swaps_the_data_mid_run():
    batches = []
    engine = Engine(lambda e, b: batches.append(b))

    @engine.on(Events.ITERATION_COMPLETED(once=2))
    def switch(engine):
        engine.set_data(["x", "y", "z", "w"])

    engine.run([1, 2, 3, 4], max_epochs=2)
    assert batches == [1, 2, "x", "y", "z", "w", "x", "y"]
    with pytest.raises(TypeError, match="data must be iterable"):
        engine.set_data(3)


def test_state_accepts_user_attributes():
    state = State(alpha=0.5)
    assert state.alpha == 0.5
    assert (state.iteration, state.epoch, state.epoch_length) == (0, 0, None)
    assert state.times == {"EPOCH_COMPLETED": None, "COMPLETED": None}
