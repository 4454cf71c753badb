"""``Precision`` and ``Recall`` with Ignite's averages, computed by Ember from per-class counts.

torchmetrics disagrees with Ignite here (its macro mean leaves out classes absent from both the
predictions and the targets, and its binary averages are the positive class's value), so the
counting is Ember's: per class, the true positives, the predicted positives and the actual
positives, summed over the batches in float64 on the batches' device (no host sync per batch), and
over the processes at ``compute()``. Then, as Ignite::

    average=False        per class: tp / (predicted or actual positives); a tensor of C values
                         (binary: the positive class's value, a number)
    True / "macro"       the mean of the per-class values, over all C classes (absent ones count as 0)
    "micro"              sum(tp) / sum(predicted or actual positives)
    "weighted"           the per-class values weighted by each class's number of actual positives
    "samples"            multilabel only: per sample over its labels, then the mean over samples

Binary inputs with an average are two classes (negative and positive), as in Ignite. A class with
no positives has the value 0 (Ignite adds 1e-20 to every denominator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ember.distributed import comms
from ember.metrics.classification import binary_labels, check_num_classes, labels_last, task_of
from ember.metrics.metric import Metric, NotComputableError, pair

EPS = 1e-20
_AVERAGES = {False: False, None: False, True: "macro", "macro": "macro", "micro": "micro",
             "weighted": "weighted", "samples": "samples"}  # fmt: skip


def check_average(average: Any) -> bool | str:
    """Ignite's ``average``: False/None (per class), True or "macro", "micro", "weighted", "samples"."""
    try:
        return _AVERAGES[average]
    except (KeyError, TypeError):
        raise ValueError(
            f"average={average!r} is not supported; use False (per class), True or 'macro', 'micro', 'weighted' "
            "or 'samples'"
        ) from None


class ClassCounts(Metric):
    """Per-class true, predicted and actual positives over the batches (see the module doc).

    After ``update``, :meth:`counts` gives them summed over the processes.
    """

    def __init__(
        self,
        output_transform: Callable | None = None,
        average: bool | str | None = False,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
        *,
        num_classes: int | None = None,
    ) -> None:
        if not isinstance(is_multilabel, bool):
            raise TypeError(f"is_multilabel must be True or False, got {is_multilabel!r}")
        self.average = check_average(average)
        self.is_multilabel = is_multilabel
        self._classes_given = check_num_classes(num_classes)
        self.num_classes = self._classes_given
        self.task: str | None = None
        super().__init__(None, output_transform, device, skip_unrolling)

    def reset(self) -> None:
        """Forget the counts and the task read from the first batch."""
        self.task, self.num_classes = None, self._classes_given
        self._tp: torch.Tensor | None = None  # per class (binary without average: 0-d)
        self._predicted: torch.Tensor | None = None
        self._actual: torch.Tensor | None = None
        self._sample_sum: torch.Tensor | None = None  # average="samples": the sum of the per-sample values
        self._samples = 0
        self._updates = 0

    def update(self, output: Any) -> None:
        """Add one batch's per-class counts, on the device, without reading values on the host (except
        a class-index check on CPU targets). The first batch fixes the task and the number of classes.

        Args:
            output: ``(y_pred, y)`` or ``{"y_pred": ..., "y": ...}``; see :mod:`ember.metrics.classification`.
        """
        name = type(self).__name__
        y_pred, y = pair(output, name)
        task, classes = task_of(name, y_pred, y, self.is_multilabel, self._classes_given)
        if self.task is None:
            if self.average == "samples" and task != "multilabel":
                raise ValueError(f"{name}: average='samples' needs multilabel input (is_multilabel=True), got {task}")
            self.task, self.num_classes = task, classes
        elif (task, classes) != (self.task, self.num_classes):
            raise ValueError(
                f"{name}: this batch looks {task} with {classes} classes, the earlier ones {self.task} with "
                f"{self.num_classes} (y_pred {tuple(y_pred.shape)}, y {tuple(y.shape)})"
            )
        y_pred, y = y_pred.detach(), y.detach()
        device = self._device or y_pred.device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        if task == "multilabel":
            p = labels_last(binary_labels(y_pred)).to(device, dtype)
            t = labels_last(y).to(device, dtype)
            tp, predicted, actual = (p * t).sum(0), p.sum(0), t.sum(0)
            if self.average == "samples":
                part = self._per_sample(p * t, p, t).sum()
                self._sample_sum = part if self._sample_sum is None else self._sample_sum + part
                self._samples += t.shape[0]
        else:
            if task == "binary":
                pred_index = binary_labels(y_pred.squeeze(1) if y_pred.ndim == y.ndim + 1 else y_pred).reshape(-1)
                classes = 2
            else:
                pred_index = (y_pred.argmax(dim=1) if y_pred.ndim == y.ndim + 1 else y_pred).reshape(-1)
            pred_index, true_index = pred_index.to(device).long(), y.reshape(-1).to(device).long()
            if true_index.device.type == "cpu" and true_index.numel() and int(true_index.max()) >= classes:
                raise ValueError(
                    f"{name}: y holds class {int(true_index.max())} but there are {classes} classes "
                    f"(y_pred {tuple(y_pred.shape)})"
                )
            if task == "binary" and self.average is False:  # the positive class only
                p, t = pred_index.to(dtype), true_index.to(dtype)
                tp, predicted, actual = (p * t).sum(), p.sum(), t.sum()
            else:
                correct = (pred_index == true_index).to(dtype)
                zeros = torch.zeros(classes, dtype=dtype, device=device)
                tp = zeros.index_add(0, true_index, correct)
                predicted = zeros.index_add(0, pred_index, torch.ones_like(correct))
                actual = zeros.index_add(0, true_index, torch.ones_like(correct))
        if self._tp is None:
            self._tp, self._predicted, self._actual = tp, predicted, actual
        else:
            self._tp, self._predicted, self._actual = self._tp + tp, self._predicted + predicted, self._actual + actual
        self._updates += 1

    def _per_sample(self, tp: torch.Tensor, predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
        """Each sample's value over its labels (for average="samples")."""
        raise NotImplementedError

    def counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(true, predicted, actual)`` positives per class, summed over batches and processes."""
        if self._tp is None or self._predicted is None or self._actual is None:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before it can be computed")
        if comms.get_world_size() == 1:
            return self._tp, self._predicted, self._actual
        stacked = comms.all_reduce(torch.stack([self._tp, self._predicted, self._actual]).clone())
        return stacked[0], stacked[1], stacked[2]

    def _fraction(self, tp: torch.Tensor, denominator: torch.Tensor, actual: torch.Tensor) -> float | torch.Tensor:
        """Ignite's average of ``tp / denominator`` (see the module doc)."""
        if self.average == "samples":
            total, n = self._sample_sum, self._samples
            if comms.get_world_size() > 1:
                total, n = comms.all_reduce(total.clone()), comms.all_reduce(n)
            return float(total / n)
        if self.average == "micro":
            return float(tp.sum() / (denominator.sum() + EPS))
        fraction = tp / (denominator + EPS)
        if self.average == "weighted":
            return float(fraction @ actual / (actual.sum() + EPS))
        if self.average == "macro":
            return float(fraction.mean())
        return fraction


class Precision(ClassCounts):
    """Precision: true positives over predicted positives, per class by default (Ignite's
    ``average=False``); ``average=True``/"macro", "micro", "weighted" or "samples" for one number.

    Args:
        output_transform: maps the engine output to ``(y_pred, y)``.
        average: see :mod:`ember.metrics.precision_recall`.
        is_multilabel: ``y_pred`` and ``y`` are ``(N, C, ...)`` 0/1 labels.
        device: where the counts live (default: the first batch's device).
        skip_unrolling: see :class:`~ember.metrics.Metric`.
        num_classes: checked against ``y_pred``; with ``num_classes > 2`` ``y_pred`` may hold class indices.
    """

    def _per_sample(self, tp: torch.Tensor, predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
        return tp.sum(1) / (predicted.sum(1) + EPS)

    def compute(self) -> float | torch.Tensor:
        """Precision over every batch and process since the last reset: with ``average=False`` a tensor
        of per-class values (0-d for binary input: the positive class's), otherwise a float.

        Raises:
            NotComputableError: when there was no update since the last reset.
        """
        tp, predicted, actual = self.counts()
        return self._fraction(tp, predicted, actual)


class Recall(ClassCounts):
    """Recall: true positives over actual positives, per class by default (Ignite's
    ``average=False``); ``average=True``/"macro", "micro", "weighted" or "samples" for one number.
    The arguments are :class:`Precision`'s."""

    def _per_sample(self, tp: torch.Tensor, predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
        return tp.sum(1) / (actual.sum(1) + EPS)

    def compute(self) -> float | torch.Tensor:
        """Recall over every batch and process since the last reset: with ``average=False`` a tensor of
        per-class values (0-d for binary input: the positive class's), otherwise a float.

        Raises:
            NotComputableError: when there was no update since the last reset.
        """
        tp, _, actual = self.counts()
        return self._fraction(tp, actual, actual)
