"""Attachable metrics for the Engine with Ignite's names, arguments and values.

``metric.attach(engine, "name", usage=...)`` resets, updates and computes the metric on the
engine's events into ``engine.state.metrics["name"]`` (usages: :mod:`ember.metrics.usage`); any
``torchmetrics.Metric`` becomes attachable as ``Metric(tm_metric)``. ``Accuracy`` and ``Loss`` run on
torchmetrics (``pip install "ember[metrics]"``); ``Precision``, ``Recall``, ``Fbeta``, ``Average``,
``GeometricAverage`` and ``RunningAverage`` are Ember's own code, where torchmetrics' values differ
from Ignite's.
"""

from ember.metrics.accumulation import Average, GeometricAverage, VariableAccumulation
from ember.metrics.classification import Accuracy
from ember.metrics.fbeta import F1, Fbeta
from ember.metrics.loss import Loss
from ember.metrics.metric import Metric, NotComputableError, reinit__is_reduced, sync_all_reduce
from ember.metrics.precision_recall import Precision, Recall
from ember.metrics.running_average import RunningAverage
from ember.metrics.usage import (
    BatchFiltered,
    BatchWise,
    EpochWise,
    MetricUsage,
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
)

__all__ = [
    "F1",
    "Accuracy",
    "Average",
    "BatchFiltered",
    "BatchWise",
    "EpochWise",
    "Fbeta",
    "GeometricAverage",
    "Loss",
    "Metric",
    "MetricUsage",
    "NotComputableError",
    "Precision",
    "Recall",
    "RunningAverage",
    "RunningBatchWise",
    "RunningEpochWise",
    "SingleEpochRunningBatchWise",
    "VariableAccumulation",
    "reinit__is_reduced",
    "sync_all_reduce",
]
