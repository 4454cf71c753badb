"""``Engine.run`` against the real Ignite: event sequences ``(epoch, iteration, event)``, the batches
the process function gets and ``state`` after each run, over data with and without a length,
``epoch_length`` shorter and longer than the data, ``max_iters``, ``data=None`` and runs continued
or restarted by a second ``run()``."""

from __future__ import annotations

import warnings

import pytest
from ignite_kit import ENGINE_EVENTS, Run, assert_same, on_both


class Sized:
    """A list-like dataset whose iterator restarts: what a DataLoader is to the engine."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(range(100, 100 + self.n))


class Unsized:
    """Re-iterable data without ``__len__`` (an IterableDataset's loader)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(100, 100 + self.n))


def make_data(kind: str, n: int):
    if kind == "list":
        return list(range(100, 100 + n))
    if kind == "sized":
        return Sized(n)
    if kind == "unsized":
        return Unsized(n)
    if kind == "iterator":  # one pass only
        return iter(range(100, 100 + n))
    raise AssertionError(kind)


RUNS = [
    # (data kind, data size, run kwargs)
    ("list", 4, {}),
    ("list", 4, {"max_epochs": 3}),
    ("list", 5, {"max_epochs": 2, "epoch_length": 3}),  # epochs shorter than the data: the iterator goes on
    ("list", 3, {"max_epochs": 2, "epoch_length": 5}),  # longer: DATALOADER_STOP_ITERATION and a restart
    ("list", 4, {"max_iters": 10}),  # a partial last epoch: TERMINATE, no EPOCH_COMPLETED
    ("list", 4, {"max_iters": 8}),  # max_iters at an epoch's end
    ("list", 4, {"max_iters": 3}),
    ("list", 4, {"max_iters": 6, "epoch_length": 3}),
    ("sized", 3, {"max_epochs": 3}),
    ("unsized", 3, {"max_epochs": 3}),  # the first epoch finds the length
    ("unsized", 3, {"max_epochs": 2, "epoch_length": 2}),
    ("unsized", 4, {"max_iters": 6}),
    ("unsized", 4, {"max_iters": 4}),
    ("iterator", 5, {"max_epochs": 3, "epoch_length": 2}),  # one pass: runs out in the third epoch
    ("iterator", 5, {"max_iters": 4}),
]


@pytest.mark.parametrize(("kind", "n", "kwargs"), RUNS, ids=[f"{k}{n}-{kw}" for k, n, kw in RUNS])
def test_one_run(kind, n, kwargs):
    def scenario(side):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = Run(side).run(make_data(kind, n), **kwargs)
        return run.log, run.engine.should_terminate, len([w for w in caught if issubclass(w.category, UserWarning)])

    assert_same(scenario)


def test_run_without_data_calls_the_process_function_with_none():
    def scenario(side):
        run = Run(side).run(None, max_epochs=2, epoch_length=3)
        run.run(None, max_epochs=3)  # continues the finished run for one more epoch
        run.engine.state.max_epochs = None
        run.run(None, epoch_length=2)  # a new run
        return run.log

    log = assert_same(scenario)
    assert ("P", 1, 1, None) in log and not any("GET_BATCH" in str(e) for e in log)


def test_run_without_data_needs_an_epoch_length():
    def scenario(side):
        return Run(side).run().run(None, max_epochs=2).log

    assert_same(scenario)


CONTINUATIONS = [
    # (first run, second run): what the second run() does after a finished first one
    ({"max_epochs": 2}, {"max_epochs": 5}),  # continues: 3 more epochs (Ignite processes the new batches only)
    ({"max_epochs": 2}, {"max_epochs": 2}),  # done: a new run of 2 epochs
    ({"max_epochs": 2}, {}),  # done: a new run of 1 epoch
    ({"max_epochs": 3}, {"max_epochs": 1}),  # below the current epoch: raises
    ({"max_epochs": 2}, {"max_iters": 5}),  # switching to max_iters: raises
    ({"max_iters": 5}, {"max_iters": 9}),  # continues to 9
    ({"max_iters": 5}, {"max_iters": 3}),  # raises
    ({"max_iters": 5}, {"max_epochs": 3}),  # switching to max_epochs: raises
    ({"max_epochs": 2}, {"max_epochs": 3, "epoch_length": 4}),  # another epoch length: raises
    ({"max_epochs": 2, "epoch_length": 3}, {"max_epochs": 3, "epoch_length": 3}),
]


@pytest.mark.parametrize(("first", "second"), CONTINUATIONS, ids=[f"{a}-then-{b}" for a, b in CONTINUATIONS])
def test_run_again(first, second):
    def scenario(side):
        run = Run(side).run(list(range(5)), **first)
        return run.run(list(range(5)), **second).log

    assert_same(scenario)


def test_resetting_max_epochs_restarts_a_run():
    def scenario(side, events=ENGINE_EVENTS):
        run = Run(side, events=events)
        run.on(run.Events.ITERATION_COMPLETED(once=7), lambda e: e.interrupt())
        run.run(list(range(5)), max_epochs=3)
        run.engine.state.max_epochs = None
        return run.run(list(range(3)), max_epochs=2).log

    assert_same(scenario, events=[e for e in ENGINE_EVENTS if e != "EXCEPTION_RAISED"])
    # deliberate difference: Ignite closes the paused run's generator, and its EXCEPTION_RAISED
    # handlers get the GeneratorExit; nothing failed, so Ember fires nothing
    ignite_log, ember_log = on_both(scenario)
    assert (0, 0, "EXCEPTION_RAISED", "GeneratorExit") in ignite_log
    assert not any("EXCEPTION_RAISED" in entry for entry in ember_log)


def test_a_new_run_over_data_without_length_keeps_the_last_epoch_length():
    def scenario(side):
        run = Run(side).run(Unsized(3), max_epochs=2)
        return run.run(Unsized(5), max_epochs=2).log  # done: a new run; epoch_length stays 3 (Ignite's rule)

    assert_same(scenario)


def test_state_during_the_run():
    """What handlers read from ``state`` at each event: batch and output are reset as in Ignite."""

    def scenario(side):
        run = Run(side, process=lambda e, b: b * 10)
        seen = []
        for name in ("EPOCH_STARTED", "GET_BATCH_STARTED", "GET_BATCH_COMPLETED", "ITERATION_STARTED",
                     "ITERATION_COMPLETED", "EPOCH_COMPLETED", "COMPLETED"):  # fmt: skip
            run.on(getattr(run.Events, name), (lambda n: lambda e: seen.append((n, e.state.batch, e.state.output)))(name))
        run.run([1, 2, 3], max_epochs=2)
        return seen, sorted(run.engine.state.times), run.engine.state.dataloader

    assert_same(scenario)


def test_set_data_from_a_handler_swaps_the_data_at_the_next_batch():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.ITERATION_COMPLETED(once=3), lambda e: e.set_data([7, 8, 9, 10]))
        return run.run([1, 2, 3, 4, 5], max_epochs=3).log

    assert_same(scenario)


def test_handlers_may_replace_the_batch_at_iteration_started():
    def scenario(side):
        run = Run(side)
        run.on(run.Events.ITERATION_STARTED, lambda e: setattr(e.state, "batch", e.state.batch * 2))
        return run.run([1, 2], max_epochs=2).log

    assert_same(scenario)


def test_evaluator_inside_a_trainer():
    """The standard setup: an evaluator engine run from the trainer's EPOCH_COMPLETED."""

    def scenario(side):
        outer = Run(side)
        inner = Run(side)
        outer.on(outer.Events.EPOCH_COMPLETED, lambda e: inner.run([5, 6]))
        outer.run([1, 2, 3], max_epochs=3)
        return outer.log, inner.log

    assert_same(scenario)


def test_the_returned_state_is_the_engine_state():
    ignite_same, ember_same = on_both(lambda side: (lambda r: r.engine.run([1]) is r.engine.state)(Run(side)))
    assert ignite_same and ember_same
