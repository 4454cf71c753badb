"""Attachable metrics for the Engine (Ignite's API), computed by torchmetrics.

``metric.attach(engine, "name")`` resets, updates and computes the metric on the engine's events
into ``engine.state.metrics["name"]``; any ``torchmetrics.Metric`` becomes attachable as
``Metric(tm_metric)``. torchmetrics is imported when a metric is built (``pip install "ember[metrics]"``).
"""

from ember.metrics.classification import F1, Accuracy, Fbeta, Precision, Recall
from ember.metrics.loss import Loss
from ember.metrics.metric import Metric, NotComputableError
from ember.metrics.running_average import RunningAverage

__all__ = ["F1", "Accuracy", "Fbeta", "Loss", "Metric", "NotComputableError", "Precision", "Recall", "RunningAverage"]
