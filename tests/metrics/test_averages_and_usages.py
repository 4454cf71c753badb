"""Ignite's averaging rules computed by hand (absent classes, binary averages, 'samples'), ``Average``,
``GeometricAverage``, ``Loss`` with ``criterion_kwargs``, the usage objects, per-sample list outputs and
Ignite-style subclasses. The side-by-side sweep against the real Ignite is in
``tests/compat/ignite/test_metrics_values.py``."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ember.engine import Engine, Events
from ember.metrics import (
    Accuracy,
    Average,
    BatchFiltered,
    EpochWise,
    Fbeta,
    GeometricAverage,
    Loss,
    Metric,
    Precision,
    Recall,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
    reinit__is_reduced,
    sync_all_reduce,
)


def computed(metric, *batches):
    metric.reset()
    for b in batches:
        metric.update(b)
    return metric.compute()


def test_a_class_absent_from_predictions_and_targets_counts_as_zero_in_the_macro_mean():
    y_pred = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])  # argmax 0 1 0 1
    y = torch.tensor([0, 1, 1, 1])
    # precision per class: 1/2, 2/2, 0 (class 2 absent) -> 0.5; recall: 1/1, 2/3, 0 -> 5/9
    assert computed(Precision(average=True), (y_pred, y)) == pytest.approx(0.5)
    assert computed(Recall(average=True), (y_pred, y)) == pytest.approx(5 / 9)
    assert computed(Precision(), (y_pred, y)).tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert computed(Precision(average="weighted"), (y_pred, y)) == pytest.approx((1 * 0.5 + 3 * 1.0) / 4)


def test_binary_averages_are_over_both_classes():
    y = torch.tensor([1, 0, 1, 1, 0])
    y_pred = torch.tensor([1, 1, 0, 1, 0])  # positive: tp 2, fp 1, fn 1; negative: tp 1, fp 1, fn 1
    assert computed(Precision(), (y_pred, y)) == pytest.approx(2 / 3)  # average=False: the positive class
    assert computed(Precision(average=True), (y_pred, y)) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert computed(Precision(average="micro"), (y_pred, y)) == pytest.approx(3 / 5)
    assert computed(Recall(average="weighted"), (y_pred, y)) == pytest.approx((3 * 2 / 3 + 2 * 1 / 2) / 5)


def test_samples_average_is_per_sample_over_labels():
    y = torch.tensor([[1, 0, 1], [0, 1, 0]])
    y_pred = torch.tensor([[1, 1, 0], [0, 1, 0]])  # sample 0: tp 1 of 2 predicted, of 2 actual; sample 1: 1/1
    assert computed(Precision(average="samples", is_multilabel=True), (y_pred, y)) == pytest.approx((0.5 + 1) / 2)
    assert computed(Recall(average="samples", is_multilabel=True), (y_pred, y)) == pytest.approx((0.5 + 1) / 2)


def test_fbeta_uses_given_precision_and_recall_once():
    engine = Engine(lambda e, b: b)
    precision, recall = Precision(average=False), Recall(average=False)
    precision.attach(engine, "precision")
    Fbeta(1.0, precision=precision, recall=recall).attach(engine, "f1")
    y_pred = torch.eye(3)[[0, 1, 2, 0]] * 2.0
    y = torch.tensor([0, 1, 1, 0])
    engine.run([(y_pred, y)], max_epochs=1)
    p = engine.state.metrics["precision"]
    assert p.tolist() == pytest.approx([1.0, 1.0, 0.0])  # updated once, not twice
    r = torch.tensor([1.0, 0.5, 0.0])
    assert engine.state.metrics["f1"] == pytest.approx(float((2 * p * r / (p + r + 1e-15)).mean()))
    with pytest.raises(ValueError, match="average=False"):
        Fbeta(1.0, precision=Precision(average=True))
    multilabel = Fbeta(1.0, precision=Precision(is_multilabel=True))  # the recall made to match
    assert multilabel.recall.is_multilabel
    with pytest.raises(ValueError, match="output_transform and device go to the precision"):
        Fbeta(1.0, precision=Precision(), output_transform=lambda o: o)


def test_average_and_geometric_average_by_hand():
    assert computed(Average(), 1.0, 2.0, 6.0) == pytest.approx(3.0)
    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # a 2-d output is a batch of rows
    assert computed(Average(), rows, torch.tensor([[5.0, 6.0]])).tolist() == pytest.approx([3.0, 4.0])
    assert computed(Average(), torch.tensor([1.0, 3.0]), torch.tensor([3.0, 5.0])).tolist() == [2.0, 4.0]
    assert computed(GeometricAverage(), 1.0, 4.0, 16.0) == pytest.approx(4.0)
    with pytest.raises(TypeError, match="must be a number or a tensor"):
        computed(Average(), "x")
    engine = Engine(lambda e, b: b)
    Average().attach(engine, "mean")
    engine.run([torch.tensor(1.0), torch.tensor(2.0)], max_epochs=1)
    assert engine.state.metrics["mean"] == 1.5 and isinstance(engine.state.metrics["mean"], float)


def test_loss_takes_criterion_kwargs_from_a_dict_output():
    y_pred = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    weight = torch.tensor([1.0, 2.0, 0.5])
    engine = Engine(lambda e, b: {"y_pred": b[0], "y": b[1], "criterion_kwargs": {"weight": weight}})
    Loss(F.cross_entropy).attach(engine, "nll")
    engine.run([(y_pred[:4], y[:4]), (y_pred[4:], y[4:])], max_epochs=1)
    expected = (
        4 * F.cross_entropy(y_pred[:4], y[:4], weight=weight) + 2 * F.cross_entropy(y_pred[4:], y[4:], weight=weight)
    ) / 6
    assert engine.state.metrics["nll"] == pytest.approx(float(expected))
    engine = Engine(lambda e, b: {"y_pred": b[0], "y": b[1]})  # criterion_kwargs may be left out
    Loss(F.cross_entropy).attach(engine, "nll")
    engine.run([(y_pred, y)], max_epochs=1)
    assert engine.state.metrics["nll"] == pytest.approx(float(F.cross_entropy(y_pred, y)))


def trace_usage(usage, epochs=2):
    engine = Engine(lambda e, b: b)
    Average().attach(engine, "m", usage=usage)
    seen = []
    for event in (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED):
        engine.add_event_handler(event, lambda e, ev=event: seen.append((ev.name, e.state.metrics.get("m"))))
    engine.run([1.0, 3.0, 5.0], max_epochs=epochs)
    return seen


def test_usages_decide_when_the_metric_resets_updates_and_computes():
    it, ep = "ITERATION_COMPLETED", "EPOCH_COMPLETED"
    assert trace_usage(EpochWise()) == trace_usage("epoch_wise") == [
        (it, None), (it, None), (it, None), (ep, 3.0), (it, 3.0), (it, 3.0), (it, 3.0), (ep, 3.0)
    ]  # fmt: skip
    assert trace_usage(SingleEpochRunningBatchWise()) == [
        (it, 1.0), (it, 2.0), (it, 3.0), (ep, 3.0), (it, 1.0), (it, 2.0), (it, 3.0), (ep, 3.0)
    ]  # fmt: skip
    assert trace_usage("running_batch_wise")[4:] == [(it, 2.5), (it, 2.6), (it, 3.0), (ep, 3.0)]  # never reset
    # updated at each epoch end with the last output (5.0), computed then
    assert trace_usage(RunningEpochWise())[3::4] == [(ep, 5.0), (ep, 5.0)]
    assert trace_usage(BatchFiltered(every=2))[3] == (ep, 3.0)  # iteration 2 only
    with pytest.raises(TypeError, match="usage must be a MetricUsage"):
        Average().attach(Engine(lambda e, b: b), "m", usage=3)


def test_per_sample_lists_are_fed_one_sample_at_a_time():
    y_pred = [torch.tensor([0.1, 0.9]), torch.tensor([0.8, 0.2]), torch.tensor([0.3, 0.7])]
    y = [torch.tensor(1), torch.tensor(1), torch.tensor(1)]
    engine = Engine(lambda e, b: b)
    Accuracy().attach(engine, "acc")
    engine.run([(y_pred, y)], max_epochs=1)
    assert engine.state.metrics["acc"] == pytest.approx(2 / 3)
    skip = Accuracy(skip_unrolling=True)
    with pytest.raises(TypeError, match="must be tensors"):
        skip.update((y_pred, y))


def test_a_subclass_written_for_ignite():
    class SumOfSquares(Metric):
        required_output_keys = None

        def __init__(self, output_transform=lambda x: x, device="cpu"):
            self.total = None
            super().__init__(output_transform, device=device)  # Ignite's positional form

        @reinit__is_reduced
        def reset(self):
            self.total = torch.tensor(0.0)

        @reinit__is_reduced
        def update(self, output):
            self.total += (output**2).sum()

        @sync_all_reduce("total")
        def compute(self):
            return self.total

    metric = SumOfSquares(output_transform=lambda out: out * 2)
    assert metric.device == torch.device("cpu")

    class Positional(SumOfSquares):
        def __init__(self):
            self.total = None
            Metric.__init__(self, lambda out: out, "cpu", True)  # Metric(output_transform, device, skip_unrolling)

    positional = Positional()
    assert positional.device == torch.device("cpu") and positional._skip_unrolling is True
    engine = Engine(lambda e, b: b)
    metric.attach(engine, "ss")
    engine.run([torch.tensor([1.0, 2.0]), torch.tensor([3.0])], max_epochs=1)
    assert engine.state.metrics["ss"] == pytest.approx(4 * (1 + 4 + 9))
    with pytest.raises(ValueError, match="op 'MEAN'"):
        sync_all_reduce("total:MEAN")


def test_values_are_numbers_or_cpu_tensors_like_ignite():
    y_pred, y = torch.eye(3)[[0, 1, 2]], torch.tensor([0, 1, 1])
    assert isinstance(computed(Accuracy(), (y_pred, y)), float)
    assert isinstance(computed(Precision(average=True), (y_pred, y)), float)
    per_class = computed(Recall(), (y_pred, y))
    assert per_class.dtype == torch.float64 and per_class.shape == (3,)
    assert not math.isnan(computed(Fbeta(2.0), (y_pred, y)))
