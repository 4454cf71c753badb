"""The attach protocol (events, priorities, detach, usages), Loss, RunningAverage, and wrapping any
torchmetrics metric."""

from __future__ import annotations

import pytest
import torch
import torchmetrics
from torch.nn import functional as F

from ember.engine import Engine, Events
from ember.metrics import Accuracy, Loss, Metric, NotComputableError, RunningAverage


def test_metric_values_are_ready_for_user_handlers_attached_earlier():
    engine = Engine(lambda engine, batch: batch)
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(e.state.metrics.get("acc")))  # added first
    Accuracy().attach(engine, "acc")
    engine.run([(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))], max_epochs=1)
    assert seen == [pytest.approx(0.5)]


def test_detach_and_is_attached():
    engine = Engine(lambda engine, batch: batch)
    acc = Accuracy()
    acc.attach(engine, "acc")
    assert acc.is_attached(engine)
    acc.detach(engine)
    assert not acc.is_attached(engine)
    engine.run([(torch.eye(2), torch.tensor([0, 1]))], max_epochs=1)
    assert "acc" not in engine.state.metrics
    with pytest.raises(ValueError, match="usage='per_batch' is not supported"):
        acc.attach(engine, "acc", usage="per_batch")


def test_batch_wise_usage_computes_each_iteration():
    batches = [(torch.eye(2), torch.tensor([0, 1])), (torch.eye(2), torch.tensor([1, 1]))]
    engine = Engine(lambda engine, batch: batch)
    Accuracy().attach(engine, "acc", usage="batch_wise")
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.metrics["acc"]))
    engine.run(batches, max_epochs=1)
    assert seen == [pytest.approx(1.0), pytest.approx(0.5)]


def test_loss_is_the_batch_size_weighted_mean():
    y_pred = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    batches = [(y_pred[:8], y[:8]), (y_pred[8:], y[8:])]
    assert run_metric(Loss(F.cross_entropy), batches) == pytest.approx(float(F.cross_entropy(y_pred, y)), rel=1e-6)
    weights = torch.tensor([1.0, 2.0, 3.0])
    with_kwargs = [(p, t, {"weight": weights}) for p, t in batches]
    by_hand = (
        8 * F.cross_entropy(y_pred[:8], y[:8], weight=weights) + 2 * F.cross_entropy(y_pred[8:], y[8:], weight=weights)
    ) / 10
    assert run_metric(Loss(F.cross_entropy), with_kwargs) == pytest.approx(float(by_hand), rel=1e-6)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        run_metric(Loss(lambda p, t: F.cross_entropy(p, t, reduction="none")), batches)


def run_metric(metric, batches, name="m"):
    engine = Engine(lambda engine, batch: batch)
    metric.attach(engine, name)
    engine.run(batches, max_epochs=1)
    return engine.state.metrics[name]


def test_running_average_of_the_output_is_an_ema_stored_as_a_number():
    outputs = [4.0, 2.0, 8.0, 1.0]
    engine = Engine(lambda engine, batch: torch.tensor(outputs[engine.state.iteration - 1]))
    average = RunningAverage(output_transform=lambda out: out, alpha=0.5)
    average.attach(engine, "avg")
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.metrics["avg"]))
    engine.run(range(2), max_epochs=2)
    assert all(isinstance(v, float) for v in seen)  # as Ignite stores it
    assert seen == [4.0, 3.0, 5.5, 3.25]  # not reset at the epoch boundary
    assert isinstance(average.compute(), torch.Tensor)  # compute() keeps the tensor (on its device)


def test_running_average_of_a_metric_and_per_epoch_resets():
    batches = [(torch.eye(2), torch.tensor([0, 1])), (torch.eye(2), torch.tensor([1, 1]))]
    engine = Engine(lambda engine, batch: batch)
    RunningAverage(Accuracy(), alpha=0.5).attach(engine, "acc", usage="single_epoch_running_batch_wise")
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(float(e.state.metrics["acc"])))
    engine.run(batches, max_epochs=2)
    assert seen == [1.0, 0.75, 1.0, 0.75]


def test_running_average_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one of src"):
        RunningAverage()
    with pytest.raises(ValueError, match="exactly one of src"):
        RunningAverage(Accuracy(), output_transform=lambda o: o)
    with pytest.raises(TypeError, match=r"src must be an ember\.metrics\.Metric"):
        RunningAverage(object())
    with pytest.warns(DeprecationWarning, match="epoch_bound"):
        RunningAverage(output_transform=lambda o: o, epoch_bound=True)
    with pytest.raises(ValueError, match="alpha must be a number in \\(0, 1\\]"):
        RunningAverage(output_transform=lambda o: o, alpha=1.5)
    with pytest.raises(NotComputableError):
        RunningAverage(output_transform=lambda o: o).compute()


def test_any_torchmetrics_metric_becomes_attachable():
    preds = torch.tensor([1.0, 2.0, 4.0, 8.0])
    target = torch.tensor([1.0, 3.0, 4.0, 6.0])
    batches = [(preds[:3], target[:3]), (preds[3:], target[3:])]
    mse = run_metric(Metric(torchmetrics.MeanSquaredError()), batches)
    assert mse == pytest.approx((0 + 1 + 0 + 4) / 4)
    collection = torchmetrics.MetricCollection(
        {"mae": torchmetrics.MeanAbsoluteError(), "mse": torchmetrics.MeanSquaredError()}
    )
    engine = Engine(lambda engine, batch: batch)
    Metric(collection).attach(engine, "errors")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["mae"] == pytest.approx((0 + 1 + 0 + 2) / 4)
    assert engine.state.metrics["errors"] == {"mae": pytest.approx(0.75), "mse": pytest.approx(1.25)}


def test_a_dict_result_is_stored_under_each_key_and_the_name():
    class Stats(Metric):
        def __init__(self):
            super().__init__(torchmetrics.MeanMetric(nan_strategy="disable"), output_transform=lambda b: b[0])

        def compute(self):
            mean = super().compute()
            return {"mean": mean, "double": 2 * mean}

    engine = Engine(lambda engine, batch: batch)
    Stats().attach(engine, "stats")
    engine.run([(torch.tensor([1.0, 3.0]), None)], max_epochs=1)
    assert engine.state.metrics["mean"] == 2.0 and engine.state.metrics["double"] == 4.0
    assert engine.state.metrics["stats"] == {"mean": 2.0, "double": 4.0}


def test_wrapped_state_moves_to_the_batch_device_and_compute_needs_an_update():
    metric = Metric(torchmetrics.MeanSquaredError())
    with pytest.raises(NotComputableError, match="at least one update"):
        metric.compute()
    metric.update((torch.tensor([1.0]), torch.tensor([2.0])))
    assert float(metric.compute()) == 1.0 and metric.metric.device.type == "cpu"
    with pytest.raises(TypeError, match=r"must be a torchmetrics\.Metric"):
        Metric(object())
