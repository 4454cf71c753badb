"""``Fbeta`` (and ``F1``): the F-score from a per-class :class:`Precision` and :class:`Recall`, as Ignite.

Per class ``F = (1 + beta^2) * P * R / (beta^2 * P + R + 1e-15)``; ``average=True`` (Ignite's
default) is the mean over all classes, ``average=False`` the per-class values (binary: the positive
class's value). Ember adds ``"micro"`` (from the summed counts) and ``"weighted"`` (by each class's
actual positives), where Ignite treats any true value as the macro mean.

Like Ignite's ``MetricsLambda``, ``Fbeta`` drives its precision and recall metrics: attached, it
resets and updates them on the engine's events unless they are attached there already (pass your
own ``Precision(average=False)`` / ``Recall(average=False)`` to share them with their own entries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ember.engine.events import Priority
from ember.metrics.metric import Metric
from ember.metrics.precision_recall import EPS, ClassCounts, Precision, Recall
from ember.metrics.usage import EpochWise, MetricUsage, check_usage

_F_EPS = 1e-15
_AVERAGES = {True: "macro", "macro": "macro", False: False, None: False, "micro": "micro", "weighted": "weighted"}


class Fbeta(Metric):
    """F-beta score with Ignite's arguments; see the module doc.

    Args:
        beta: the weight of recall (> 0).
        average: True/"macro" (the mean over classes), False (per class), "micro" or "weighted" (Ember).
        precision: a ``Precision(average=False)`` to use (default: a new one).
        recall: a ``Recall(average=False)`` to use (default: a new one).
        output_transform: for the new precision and recall (not with ``precision``/``recall`` given).
        device: for the new precision and recall (not with ``precision``/``recall`` given).
        num_classes: for the new precision and recall (Ember).
        is_multilabel: for the new precision and recall (Ember).
    """

    def __init__(
        self,
        beta: float,
        average: bool | str = True,
        precision: Precision | None = None,
        recall: Recall | None = None,
        output_transform: Callable | None = None,
        device: str | torch.device | None = None,
        *,
        num_classes: int | None = None,
        is_multilabel: bool = False,
    ) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        try:
            self.average = _AVERAGES[average]
        except (KeyError, TypeError):
            raise ValueError(
                f"average={average!r} is not supported by Fbeta; use True or 'macro', False, 'micro' or 'weighted'"
            ) from None
        for arg, metric, cls in (("precision", precision, Precision), ("recall", recall, Recall)):
            if metric is None:
                continue
            if not isinstance(metric, cls):
                raise TypeError(f"{arg} must be an ember.metrics.{cls.__name__}, got {type(metric).__name__}")
            if metric.average is not False:
                raise ValueError(f"{arg} must be built with average=False, got average={metric.average!r}")
            if output_transform is not None or device is not None:
                raise ValueError(f"output_transform and device go to the {arg} metric given; pass them there")
        given = precision or recall  # a missing one is made like the given one (Ignite: default arguments)
        if given is not None:
            device, is_multilabel, num_classes = given.device, given.is_multilabel, given._classes_given
        if precision is None:
            precision = Precision(output_transform, False, is_multilabel, device, num_classes=num_classes)
        if recall is None:
            recall = Recall(output_transform, False, is_multilabel, device, num_classes=num_classes)
        self.beta = float(beta)
        self.precision = precision
        self.recall = recall
        super().__init__(None, output_transform)

    def _parts(self) -> tuple[ClassCounts, ClassCounts]:
        return self.precision, self.recall

    def reset(self) -> None:
        """Reset the precision and recall metrics this score is computed from."""
        for metric in self._parts():
            metric.reset()

    def update(self, output: Any) -> None:
        """Update the precision and recall metrics with one batch's ``(y_pred, y)``."""
        for metric in self._parts():
            metric.update(output)

    def compute(self) -> float | torch.Tensor:
        """The F-beta score from the current precision and recall counts: a float for "macro", "micro"
        and "weighted", a tensor of per-class values for ``average=False`` (0-d for binary input).

        Raises:
            NotComputableError: when the precision and recall have not been updated since their reset.
        """
        b2 = self.beta**2
        if self.average == "micro":
            tp_p, predicted, _ = self.precision.counts()
            tp_r, _, actual = self.recall.counts()
            p = tp_p.sum() / (predicted.sum() + EPS)
            r = tp_r.sum() / (actual.sum() + EPS)
            return float((1.0 + b2) * p * r / (b2 * p + r + _F_EPS))
        p, r = self.precision.compute(), self.recall.compute()
        f = (1.0 + b2) * p * r / (b2 * p + r + _F_EPS)
        if self.average == "macro":
            return float(f.mean())
        if self.average == "weighted":
            actual = self.recall.counts()[2]
            return float(f @ actual / (actual.sum() + EPS))
        return f

    def iteration_completed(self, engine: Any) -> None:
        """Update the precision and recall from ``engine.state.output`` (each applies its own
        ``output_transform``)."""
        for metric in self._parts():
            metric.iteration_completed(engine)

    def attach(self, engine: Any, name: str, usage: str | MetricUsage = EpochWise()) -> None:  # noqa: B008
        """Compute into ``engine.state.metrics[name]``, resetting and updating the precision and
        recall metrics on ``usage``'s events unless they are attached to ``engine`` already."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        usage = check_usage(usage)
        for metric in self._parts():
            if not engine.has_event_handler(metric.started, usage.STARTED):
                engine.add_event_handler(usage.STARTED, metric.started, priority=Priority.METRICS)
            if not engine.has_event_handler(metric.iteration_completed, usage.ITERATION_COMPLETED):
                engine.add_event_handler(
                    usage.ITERATION_COMPLETED, metric.iteration_completed, priority=Priority.METRICS
                )
        engine.add_event_handler(usage.COMPLETED, self.completed, name, priority=Priority.METRICS)

    def is_attached(self, engine: Any, usage: str | MetricUsage = EpochWise()) -> bool:  # noqa: B008
        """Whether the score computes on ``engine`` at ``usage``'s ``COMPLETED`` event and its precision
        and recall reset and update there too."""
        usage = check_usage(usage)
        return super().is_attached(engine, usage) and all(
            engine.has_event_handler(m.started, usage.STARTED)
            and engine.has_event_handler(m.iteration_completed, usage.ITERATION_COMPLETED)
            for m in self._parts()
        )


class F1(Fbeta):
    """The F1 score, ``Fbeta(1.0)``: the mean over classes by default (``average="macro"``);
    ``average=False`` per class, "micro" or "weighted". Ember's name (Ignite writes ``Fbeta(1.0)``)."""

    def __init__(
        self,
        output_transform: Callable | None = None,
        average: bool | str = "macro",
        num_classes: int | None = None,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(
            1.0, average, output_transform=output_transform, device=device,
            num_classes=num_classes, is_multilabel=is_multilabel,
        )  # fmt: skip
