"""Accuracy, Precision, Recall and F1 attached to an Engine, against values computed by hand."""

from __future__ import annotations

import sys

import pytest
import torch

from ember.engine import Engine
from ember.metrics import F1, Accuracy, Fbeta, Precision, Recall

# 8 samples, 3 classes. argmax of the logits:  0 1 2 0 1 2 2 1
#                                   targets:   0 1 1 2 1 2 2 0
LOGITS = torch.eye(3)[[0, 1, 2, 0, 1, 2, 2, 1]] * 3.0 - 1.0
TARGET = torch.tensor([0, 1, 1, 2, 1, 2, 2, 0])
# per class     tp  fp  fn   precision  recall  f1
#   0            1   1   1     1/2        1/2    1/2
#   1            2   1   1     2/3        2/3    2/3
#   2            2   1   1     2/3        2/3    2/3
PRECISION = [1 / 2, 2 / 3, 2 / 3]
RECALL = [1 / 2, 2 / 3, 2 / 3]
F1_PER_CLASS = [1 / 2, 2 / 3, 2 / 3]
SUPPORT = [2, 3, 3]


def run(metric, batches, name="m", epochs=1):
    engine = Engine(lambda engine, batch: batch)
    metric.attach(engine, name)
    engine.run(batches, max_epochs=epochs)
    return engine.state.metrics[name]


def halves(y_pred=LOGITS, y=TARGET):
    return [(y_pred[:5], y[:5]), (y_pred[5:], y[5:])]  # uneven batches: means of batch values would differ


def test_multiclass_accuracy_is_the_fraction_right_over_all_samples():
    assert run(Accuracy(), halves()) == pytest.approx(5 / 8)


def test_binary_accuracy_from_labels_probabilities_and_logits():
    y = torch.tensor([1, 0, 1, 1, 0])
    assert run(Accuracy(), [(torch.tensor([1, 0, 0, 1, 1]), y)]) == pytest.approx(3 / 5)
    assert run(Accuracy(), [(torch.tensor([0.9, 0.2, 0.4, 0.7, 0.6]), y)]) == pytest.approx(3 / 5)
    assert run(Accuracy(), [(torch.tensor([2.0, -1.0, -0.5, 3.0, 0.5]), y)]) == pytest.approx(3 / 5)


def test_multilabel_accuracy_counts_a_sample_only_when_all_labels_match():
    y = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    y_pred = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0]])
    assert run(Accuracy(is_multilabel=True), [(y_pred, y)]) == pytest.approx(2 / 3)


def test_precision_and_recall_are_per_class_by_default():
    assert run(Precision(), halves()).tolist() == pytest.approx(PRECISION)
    assert run(Recall(), halves()).tolist() == pytest.approx(RECALL)


@pytest.mark.parametrize(
    ("average", "precision", "recall"),
    [
        (True, sum(PRECISION) / 3, sum(RECALL) / 3),
        ("macro", sum(PRECISION) / 3, sum(RECALL) / 3),
        ("micro", 5 / 8, 5 / 8),
        (
            "weighted",
            sum(p * s for p, s in zip(PRECISION, SUPPORT)) / 8,
            sum(r * s for r, s in zip(RECALL, SUPPORT)) / 8,
        ),
    ],
)
def test_precision_and_recall_averages(average, precision, recall):
    assert run(Precision(average=average), halves()) == pytest.approx(precision)
    assert run(Recall(average=average), halves()) == pytest.approx(recall)


def test_f1_is_macro_f1_like_ignites_fbeta():
    macro = sum(F1_PER_CLASS) / 3
    assert run(F1(), halves()) == pytest.approx(macro)
    assert macro != pytest.approx(5 / 8)  # not torchmetrics F1Score's micro default
    assert run(F1(average=False), halves()).tolist() == pytest.approx(F1_PER_CLASS)
    assert run(F1(average="micro"), halves()) == pytest.approx(5 / 8)


def test_fbeta_weighs_recall_by_beta_and_is_macro_by_default():
    beta2 = 4.0  # beta = 2
    per_class = [(1 + beta2) * p * r / (beta2 * p + r) for p, r in zip(PRECISION, RECALL)]
    assert run(Fbeta(2.0), halves()) == pytest.approx(sum(per_class) / 3)
    assert run(Fbeta(2.0, average=False), halves()).tolist() == pytest.approx(per_class)
    assert run(Fbeta(1.0), halves()) == pytest.approx(run(F1(), halves()))
    with pytest.raises(ValueError, match="beta must be a positive number"):
        Fbeta(0)


def test_binary_precision_recall_f1_of_the_positive_class():
    y = torch.tensor([1, 1, 1, 0, 0])
    y_pred = torch.tensor([1, 0, 1, 1, 0])  # tp 2, fp 1, fn 1
    assert run(Precision(), [(y_pred, y)]) == pytest.approx(2 / 3)
    assert run(Recall(), [(y_pred, y)]) == pytest.approx(2 / 3)
    assert run(F1(), [(y_pred, y)]) == pytest.approx(2 / 3)


def test_num_classes_is_read_from_the_first_batch_and_checked():
    metric = Precision()
    run(metric, halves())
    assert (metric.task, metric.num_classes) == ("multiclass", 3)
    with pytest.raises(ValueError, match="num_classes=4 but y_pred has 3 classes"):
        run(Accuracy(num_classes=4), halves())
    with pytest.raises(ValueError, match="this batch looks multiclass with 2 classes, the first one multiclass with 3"):
        run(Accuracy(), [(LOGITS, TARGET), (LOGITS[:, :2], TARGET)])


def test_class_indices_as_predictions_with_num_classes():
    y_pred = LOGITS.argmax(dim=1)
    assert run(Recall(num_classes=3), [(y_pred, TARGET)]).tolist() == pytest.approx(RECALL)


def test_values_reset_every_epoch():
    batches = [(LOGITS, TARGET)]
    engine = Engine(lambda engine, batch: (LOGITS if engine.state.epoch == 1 else torch.eye(3)[TARGET], TARGET))
    Accuracy().attach(engine, "acc")
    seen = []
    engine.add_event_handler("EPOCH_COMPLETED", lambda e: seen.append(e.state.metrics["acc"]))
    engine.run(batches, max_epochs=2)
    assert seen == [pytest.approx(5 / 8), pytest.approx(1.0)]


def test_output_transform_and_dict_outputs():
    engine = Engine(lambda engine, batch: {"logits": batch[0], "labels": batch[1]})
    Accuracy(output_transform=lambda out: (out["logits"], out["labels"])).attach(engine, "acc")
    F1(output_transform=lambda out: {"y_pred": out["logits"], "y": out["labels"]}).attach(engine, "f1")
    engine.run(halves(), max_epochs=1)
    assert engine.state.metrics["acc"] == pytest.approx(5 / 8)
    assert engine.state.metrics["f1"] == pytest.approx(sum(F1_PER_CLASS) / 3)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="cannot tell the task from y_pred \\(8, 3\\) and y \\(4,\\)"):
        run(Accuracy(), [(LOGITS, TARGET[:4])])
    with pytest.raises(TypeError, match=r"Accuracy\.update expects \(y_pred, y\)"):
        run(Accuracy(), [LOGITS])
    with pytest.raises(ValueError, match="average='samples' needs multilabel input"):
        run(Precision(average="samples"), halves())
    with pytest.raises(ValueError, match="average='median' is not supported"):
        Precision(average="median")
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        Accuracy(num_classes=1)
    with pytest.raises(ValueError, match=r"must both be \(N, C, \.\.\.\)"):
        run(Accuracy(is_multilabel=True), [(LOGITS, TARGET)])


def test_missing_torchmetrics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    with pytest.raises(ImportError, match=r'pip install "ember\[metrics\]"'):
        Accuracy()
