"""state_dict / load_state_dict: saving progress and resuming a run exactly."""

from __future__ import annotations

import io

import pytest
import torch

from ember.engine import Engine, Events

DATA = [1, 2, 3, 4]
MAX_EPOCHS = 4


class Crash(Exception):
    pass


class Run:
    """An engine logging (epoch, iteration) per processed batch and per epoch event."""

    def __init__(self) -> None:
        self.processed: list[tuple[int, int]] = []
        self.epochs: list[tuple[str, int, int]] = []
        self.engine = Engine(self.step)
        for event in (Events.STARTED, Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.COMPLETED):
            self.engine.add_event_handler(event, self._recorder(event.name))

    def step(self, engine, batch):
        self.processed.append((engine.state.epoch, engine.state.iteration))
        return batch

    def _recorder(self, name):
        return lambda engine: self.epochs.append((name, engine.state.epoch, engine.state.iteration))


def crash_after_saving(run: Run, event) -> dict:
    """Save the state dict when ``event`` fires, then crash the run; return what was saved."""
    saved: dict = {}

    def save_and_crash(engine):
        saved.update(engine.state_dict())
        raise Crash

    run.engine.add_event_handler(event, save_and_crash)
    with pytest.raises(Crash):
        run.engine.run(DATA, max_epochs=MAX_EPOCHS)
    return saved


def test_state_dict_holds_plain_progress_values():
    engine = Engine(lambda e, b: b)
    assert list(engine.state_dict()) == ["epoch_length", "iteration", "max_epochs", "epoch", "epoch_iteration"]
    engine.run([1, 2, 3], max_epochs=2)
    # Ignite's keys in Ignite's order (the run's bound: max_epochs or max_iters), then Ember's two
    assert list(engine.state_dict().items()) == [
        ("epoch_length", 3), ("iteration", 6), ("max_epochs", 2), ("epoch", 2), ("epoch_iteration", 0)
    ]  # fmt: skip
    engine.state.max_epochs = None  # a new run, bounded by iterations
    engine.run([1, 2, 3], max_iters=4)
    assert engine.state_dict() == {"iteration": 4, "epoch": 2, "epoch_length": 3, "max_iters": 4, "epoch_iteration": 0}


def test_a_fresh_engine_loads_its_own_state_dict():
    engine = Engine(lambda e, b: b)
    saved = engine.state_dict()
    engine.load_state_dict(saved)
    assert engine.state_dict() == saved
    assert engine.run([1, 2]).iteration == 2


def test_state_dict_at_epoch_started_resumes_that_epoch_from_its_start():
    saved = []
    engine = Engine(lambda e, b: b)
    engine.add_event_handler(Events.EPOCH_STARTED(once=2), lambda e: saved.append(e.state_dict()))
    engine.run(DATA, max_epochs=3)
    assert (saved[0]["epoch"], saved[0]["epoch_iteration"], saved[0]["iteration"]) == (1, 0, 4)
    resumed = Engine(lambda e, b: b)
    resumed.load_state_dict(saved[0])
    epochs = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    assert resumed.run(DATA).iteration == 12 and epochs == [2, 3]


def test_state_dict_loads_with_weights_only():
    engine = Engine(lambda e, b: b)
    engine.state_dict_user_keys.append("best")
    engine.add_event_handler(Events.COMPLETED, lambda e: setattr(e.state, "best", 0.25))
    engine.run([1, 2, 3], max_epochs=2)
    buffer = io.BytesIO()
    torch.save(engine.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == engine.state_dict()


def test_resume_from_an_epoch_boundary():
    reference = Run()
    reference.engine.run(DATA, max_epochs=MAX_EPOCHS)

    first = Run()
    saved = crash_after_saving(first, Events.EPOCH_COMPLETED(once=2))
    assert saved == {"iteration": 8, "epoch": 2, "epoch_length": 4, "max_epochs": 4, "epoch_iteration": 0}

    resumed = Run()
    resumed.engine.load_state_dict(saved)
    assert (resumed.engine.state.epoch, resumed.engine.state.iteration) == (2, 8)
    state = resumed.engine.run(DATA)
    assert first.processed + resumed.processed == reference.processed
    assert resumed.epochs == [
        ("STARTED", 2, 8),
        ("EPOCH_STARTED", 3, 8),
        ("EPOCH_COMPLETED", 3, 12),
        ("EPOCH_STARTED", 4, 12),
        ("EPOCH_COMPLETED", 4, 16),
        ("COMPLETED", 4, 16),
    ]
    assert (state.epoch, state.iteration) == (4, 16)


def test_resume_from_mid_epoch():
    reference = Run()
    reference.engine.run(DATA, max_epochs=MAX_EPOCHS)

    first = Run()
    saved = crash_after_saving(first, Events.ITERATION_COMPLETED(once=6))
    assert saved["iteration"] == 6

    resumed = Run()
    resumed.engine.load_state_dict(saved)
    state = resumed.engine.run(DATA)
    # epoch 2 resumes at its 3rd iteration; the run ends where the uninterrupted one did
    assert resumed.processed == reference.processed[6:]
    assert first.processed + resumed.processed == reference.processed
    assert [e for e in resumed.epochs if e[0] == "EPOCH_COMPLETED"] == [
        ("EPOCH_COMPLETED", 2, 8),
        ("EPOCH_COMPLETED", 3, 12),
        ("EPOCH_COMPLETED", 4, 16),
    ]
    assert (state.epoch, state.iteration) == (4, 16)


def test_load_with_only_the_epoch():
    run = Run()
    run.engine.load_state_dict({"epoch": 2, "epoch_length": 4, "max_epochs": 3})
    assert (run.engine.state.epoch, run.engine.state.iteration) == (2, 8)
    run.engine.run(DATA)
    assert run.processed == [(3, 9), (3, 10), (3, 11), (3, 12)]


def test_load_with_max_iters():
    run = Run()
    run.engine.load_state_dict({"iteration": 5, "epoch_length": 4, "max_iters": 10})
    state = run.engine.run(DATA)
    assert run.processed == [(2, 6), (2, 7), (2, 8), (3, 9), (3, 10)]
    assert (state.iteration, state.max_iters) == (10, 10)


def test_state_dict_user_keys():
    engine = Engine(lambda e, b: b)
    engine.state_dict_user_keys.append("best_loss")
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "best_loss", 0.5))
    engine.run([1, 2])
    saved = engine.state_dict()
    assert saved["best_loss"] == 0.5

    other = Engine(lambda e, b: b)
    other.state_dict_user_keys.append("best_loss")
    other.load_state_dict({**saved, "max_epochs": 3})
    assert other.state.best_loss == 0.5
    with pytest.raises(ValueError, match=r"lacks the user keys \['best_loss'\]"):
        other.load_state_dict({"iteration": 2, "epoch_length": 2, "max_epochs": 3})


@pytest.mark.parametrize(
    ("state_dict", "error", "match"),
    [
        ([("iteration", 1)], TypeError, "state_dict must be a mapping, got list"),
        ({"max_epochs": 2, "epoch_length": 4}, ValueError, "must hold 'iteration' or 'epoch'"),
        ({"iteration": None, "max_epochs": 2, "epoch_length": 4}, ValueError, "must hold 'iteration' or 'epoch'"),
        ({"iteration": 3, "epoch_length": 4}, ValueError, "must hold 'max_epochs' or 'max_iters'"),
        ({"epoch": 1, "max_epochs": 2}, ValueError, "needs a positive 'epoch_length'"),
        ({"iteration": 3, "epoch": 1, "epoch_length": 2, "max_epochs": 2}, ValueError, "both iteration=3 and epoch=1"),
        ({"iteration": 3, "epoch_length": 2, "max_epochs": 2, "max_iters": 9}, ValueError, "both max_epochs=2 and max_iters=9"),
        ({"iteration": 9, "epoch_length": 2, "max_epochs": 2}, ValueError, "max_epochs=2 must be positive and not below the epoch 4"),
        ({"iteration": 9, "epoch_length": 2, "max_iters": 5}, ValueError, "max_iters=5 must be positive and not below the iteration 9"),
    ],
)
def test_bad_state_dicts_raise_and_leave_the_engine_untouched(state_dict, error, match):
    engine = Engine(lambda e, b: b)
    engine.run([1, 2, 3], max_epochs=2)
    before = engine.state_dict()
    with pytest.raises(error, match=match):
        engine.load_state_dict(state_dict)
    assert engine.state_dict() == before


def test_continuing_a_loaded_run_below_its_epoch_is_refused():
    engine = Engine(lambda e, b: b)
    engine.load_state_dict({"iteration": 8, "epoch_length": 4, "max_epochs": 5})
    with pytest.raises(ValueError, match="`max_epochs`=1 is below the current epoch 2"):
        engine.run(DATA, max_epochs=1)
    state = engine.run(DATA, max_epochs=3)
    assert (state.epoch, state.iteration) == (3, 12)


def test_continuing_a_loaded_run_without_data_runs_on_none():
    # as Ignite: run() without data means batch=None, for a continued run as for a new one
    batches = []
    engine = Engine(lambda e, b: batches.append(b))
    engine.load_state_dict({"iteration": 8, "epoch_length": 4, "max_epochs": 3})
    engine.run()
    assert batches == [None] * 4
    engine = Engine(lambda e, b: b)
    engine.load_state_dict({"iteration": 0, "epoch_length": None, "max_epochs": 3})
    with pytest.raises(ValueError, match="without data needs `epoch_length`"):
        engine.run()


def test_mid_epoch_state_resumes_exactly_even_after_a_cut_epoch() -> None:
    """``epoch_iteration`` pins the position inside the epoch, so a shortened earlier epoch
    (terminate_epoch) does not shift where the resumed epoch continues."""
    seen: list[tuple[int, int]] = []

    def record(engine: Engine, batch: int) -> int:
        seen.append((engine.state.epoch, batch))
        return batch

    engine = Engine(record)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=6), lambda e: e.interrupt())
    engine.run(list(range(5)), max_epochs=3)
    saved = engine.state_dict()
    assert saved["epoch"] == 2 and saved["iteration"] == 6 and saved["epoch_iteration"] == 4

    resumed_seen: list[tuple[int, int]] = []
    resumed = Engine(lambda e, b: resumed_seen.append((e.state.epoch, b)))
    resumed.load_state_dict(saved)
    resumed.run(list(range(5)))  # the caller feeds data; here the whole list again
    assert resumed.state.epoch == 3
    assert resumed.state.iteration == 6 + 1 + 5  # the rest of epoch 2 (1 batch), then epoch 3
    assert resumed_seen[0][0] == 2 and [e for e, _ in resumed_seen].count(2) == 1
