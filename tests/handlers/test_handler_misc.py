"""``ember.handlers`` EarlyStopping, TerminateOnNan and Timer on real Engine runs."""

from __future__ import annotations

import math
import types

import pytest
import torch

import ember.handlers.timer as timer_module
from ember.engine import Engine, Events
from ember.handlers import EarlyStopping, TerminateOnNan, Timer


def scored_evaluator(scores: list[float]) -> Engine:
    """An evaluator whose ``state.metrics["score"]`` is the next scripted value on every run."""
    it = iter(scores)
    evaluator = Engine(lambda e, b: None)

    @evaluator.on(Events.COMPLETED)
    def compute(engine: Engine) -> None:
        engine.state.metrics["score"] = next(it)

    return evaluator


def test_stops_the_trainer_given_to_it(tmp_path) -> None:
    trainer = Engine(lambda e, b: None)
    evaluator = scored_evaluator([1.0, 2.0, 1.5, 1.9, 1.8, 5.0])
    handler = EarlyStopping(patience=3, score_function=lambda e: e.state.metrics["score"], trainer=trainer)
    evaluator.add_event_handler(Events.COMPLETED, handler)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0], max_epochs=1))
    trainer.run([0, 1], max_epochs=10)
    assert trainer.state.epoch == 5  # best 2.0 at epoch 2; 3 epochs without improvement
    assert handler.counter == 3 and handler.best_score == 2.0


def test_without_trainer_stops_the_engine_it_is_attached_to() -> None:
    scores = iter([0.5, 0.4, 0.3, 0.9])
    engine = Engine(lambda e, b: None)
    handler = EarlyStopping(patience=2, score_function=lambda e: next(scores))
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    engine.run([0], max_epochs=10)
    assert engine.state.epoch == 3


def run_scores(scores: list[float], **kwargs) -> int:
    it = iter(scores)
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, EarlyStopping(score_function=lambda e: next(it), **kwargs))
    engine.run([0], max_epochs=len(scores))
    return engine.state.epoch


def test_old_min_delta_and_cumulative_delta() -> None:
    # each step improves by 0.05 <= min_delta: no improvement counts
    assert run_scores([1.0, 1.05, 1.1, 1.15, 1.2], patience=3, min_delta=0.1) == 4
    # positionally too (Ignite's order: patience, score_function, trainer, min_delta, cumulative_delta)
    it = iter([1.0, 1.05, 1.1, 1.15, 1.2])
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, EarlyStopping(3, lambda e: next(it), None, 0.1, True))
    engine.run([0], max_epochs=5)
    # cumulative: the best stays at 1.0 until an increase beats it by more than 0.1 (1.15 does)
    assert engine.state.epoch == 5
    assert run_scores([1.0, 1.05, 1.1, 1.15, 1.2], patience=3, min_delta=0.1, cumulative_delta=True) == 5


def test_threshold_rel_and_mode_min() -> None:
    # rel: an improvement must beat best * (1 + 0.1) = 11; abs: best + 0.1
    assert run_scores([10.0, 10.5, 10.9, 12.0, 12.0], patience=2, threshold=0.1, threshold_mode="rel") == 3
    assert run_scores([10.0, 10.5, 10.9, 12.0, 12.0], patience=2, threshold=0.1, threshold_mode="abs") == 5
    assert run_scores([10.0, 11.5, 12.0, 13.5, 13.6], patience=2, threshold=0.1, threshold_mode="rel") == 5
    # mode min: lower is better
    assert run_scores([3.0, 2.0, 2.5, 2.4, 1.0], patience=2, mode="min") == 4
    assert run_scores([3.0, 2.0, 1.0, 0.5, 0.1], patience=1, mode="min") == 5


def test_state_round_trip_and_bad_arguments() -> None:
    h = EarlyStopping(patience=2, score_function=lambda e: 0.0)
    h.counter, h.best_score = 1, 0.75
    g = EarlyStopping(patience=2, score_function=lambda e: 0.0)
    g.load_state_dict(h.state_dict())
    assert (g.counter, g.best_score) == (1, 0.75)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0, score_function=lambda e: 0.0)
    with pytest.raises(TypeError, match="score_function"):
        EarlyStopping(patience=1, score_function=3)
    with pytest.raises(ValueError, match="threshold"):
        EarlyStopping(patience=1, score_function=lambda e: 0.0, min_delta=-1.0)
    with pytest.raises(TypeError, match="trainer"):
        EarlyStopping(patience=1, score_function=lambda e: 0.0, trainer=object())


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, torch.tensor([1.0, math.nan]), {"loss": torch.tensor(-math.inf)}, (1.0, math.nan)]
)
def test_terminate_on_nan(bad) -> None:
    outputs = [1.0, torch.tensor(2.0), bad, 4.0, 5.0]
    engine = Engine(lambda e, b: outputs[e.state.iteration - 1])
    engine.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    engine.run(list(range(5)), max_epochs=3)
    assert engine.state.iteration == 3


def test_terminate_on_nan_output_transform_and_finite_run() -> None:
    engine = Engine(lambda e, b: {"loss": 1.0, "debug": math.nan})
    engine.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(output_transform=lambda o: o["loss"]))
    engine.run([0, 1], max_epochs=2)
    assert engine.state.iteration == 4


def test_timer_average_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(timer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def step(engine: Engine, batch: int) -> None:
        clock[0] += 2.0  # each step "takes" 2 s ...

    engine = Engine(step)
    timer = Timer(average=True).attach(
        engine, start=Events.EPOCH_STARTED, resume=Events.ITERATION_STARTED,
        pause=Events.ITERATION_COMPLETED, step=Events.ITERATION_COMPLETED,
    )  # fmt: skip

    @engine.on(Events.ITERATION_COMPLETED)
    def between(_: Engine) -> None:
        clock[0] += 100.0  # ... and the time between steps (after the pause) is not counted

    engine.run(list(range(4)), max_epochs=2)
    assert timer.value() == 2.0
    assert timer.step_count == 4  # reset at each epoch start
    total = Timer().attach(engine)  # from STARTED to COMPLETED, as in Ignite
    engine.state.max_epochs = None  # a new run (Ignite's way): max_epochs=1 alone is below the finished epoch 2
    engine.run(list(range(4)), max_epochs=1)
    clock[0] += 1000.0  # time after the run does not count
    assert total.value() == 4 * 102.0
