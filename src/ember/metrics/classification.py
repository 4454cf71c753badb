"""Classification inputs as Ignite reads them, and ``Accuracy``.

Every classification metric takes ``(y_pred, y)`` per batch (``output_transform`` maps the engine
output to it) and reads the task from the shapes, as Ignite does:

- **multiclass**: ``y_pred`` of shape ``(N, C, ...)`` (logits or probabilities; the argmax is the
  prediction), ``y`` of shape ``(N, ...)`` holding class indices. With ``C == 1`` it is binary.
  With ``num_classes > 2`` given, ``y_pred`` may also hold class indices, shaped like ``y`` (Ember).
- **binary**: ``y_pred`` shaped like ``y``, 0/1 labels. Ember also takes probabilities (> 0.5 is
  positive) and logits (a sigmoid first, when any value is outside [0, 1]) where Ignite raises.
- **multilabel** (``is_multilabel=True``): ``y_pred`` and ``y`` of shape ``(N, C, ...)``, 0/1 per
  label (probabilities and logits as for binary).

``Accuracy`` is torchmetrics' (it agrees with Ignite: the fraction of correct predictions over all
samples; multilabel: a sample counts only when all its labels are right). ``Precision``, ``Recall``
and ``Fbeta`` are Ember's own code (:mod:`ember.metrics.precision_recall`,
:mod:`ember.metrics.fbeta`), because torchmetrics averages differently from Ignite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ember.metrics.metric import Metric, pair, require_torchmetrics


def check_num_classes(num_classes: Any) -> int | None:
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an int >= 2 or None (read from the first batch), got {num_classes!r}")
    return num_classes


def task_of(
    name: str, y_pred: torch.Tensor, y: torch.Tensor, is_multilabel: bool, num_classes: int | None
) -> tuple[str, int]:
    """``(task, C)`` read from the shapes (see the module doc); C is 1 for binary."""
    if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: y_pred and y must be tensors, got {type(y_pred).__name__}, {type(y).__name__}")
    if is_multilabel:
        if y_pred.shape != y.shape or y.ndim < 2 or y.shape[1] < 2:
            raise ValueError(
                f"{name}(is_multilabel=True): y_pred and y must both be (N, C, ...) with C > 1, "
                f"got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        return "multilabel", _classes(name, num_classes, y_pred.shape[1])
    if y_pred.ndim == y.ndim + 1 and y_pred.shape[:1] + y_pred.shape[2:] == y.shape:
        if y_pred.shape[1] == 1:
            return "binary", 1
        return "multiclass", _classes(name, num_classes, y_pred.shape[1])
    if y_pred.shape == y.shape:
        if num_classes is not None and num_classes > 2:
            return "multiclass", num_classes
        return "binary", 1
    raise ValueError(
        f"{name}: cannot tell the task from y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)}; expected "
        "(N, C, ...) and (N, ...) for multiclass, equal shapes for binary (or multilabel with is_multilabel=True)"
    )


def _classes(name: str, given: int | None, found: int) -> int:
    if given is not None and given != found:
        raise ValueError(f"{name}: num_classes={given} but y_pred has {found} classes (dim 1)")
    return found


def binary_labels(y_pred: torch.Tensor) -> torch.Tensor:
    """0/1 labels from labels, probabilities or logits, without reading values on the host."""
    if not y_pred.is_floating_point():
        return y_pred
    in_range = ((y_pred >= 0) & (y_pred <= 1)).all()
    return (torch.where(in_range, y_pred, y_pred.sigmoid()) > 0.5).to(y_pred.dtype)


def labels_last(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` as ``(N * ..., C)``: one row per sample and position."""
    return t.transpose(1, -1).reshape(-1, t.shape[1])


class Accuracy(Metric):
    """Fraction of correct predictions over all samples; multilabel: exact match (see the module doc).

    Args:
        output_transform: maps the engine output to ``(y_pred, y)``.
        is_multilabel: ``y_pred`` and ``y`` are ``(N, C, ...)`` 0/1 labels.
        device: where the counts live (default: the first batch's device).
        skip_unrolling: see :class:`~ember.metrics.Metric`.
        num_classes: checked against ``y_pred``'s dim 1; with ``num_classes > 2``, ``y_pred`` may
            hold class indices (Ember).
    """

    def __init__(
        self,
        output_transform: Callable | None = None,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
        *,
        num_classes: int | None = None,
    ) -> None:
        require_torchmetrics()
        if not isinstance(is_multilabel, bool):
            raise TypeError(f"is_multilabel must be True or False, got {is_multilabel!r}")
        self.num_classes = check_num_classes(num_classes)
        self._classes_given = self.num_classes
        self.is_multilabel = is_multilabel
        self.task: str | None = None
        super().__init__(None, output_transform, device, skip_unrolling)

    def update(self, output: Any) -> None:
        """Count one batch's correct predictions. The first batch fixes the task and the number of
        classes (see the module doc); a later batch that reads differently raises ``ValueError``.

        Args:
            output: ``(y_pred, y)`` or ``{"y_pred": ..., "y": ...}``.
        """
        y_pred, y = pair(output, type(self).__name__)
        task, classes = task_of(type(self).__name__, y_pred, y, self.is_multilabel, self._classes_given)
        if task == "binary" and y_pred.ndim == y.ndim + 1:
            y_pred = y_pred.squeeze(1)
        elif task == "multilabel" and y.ndim > 2:  # every position of the extra dims is a sample (Ignite)
            y_pred, y = labels_last(y_pred), labels_last(y)
        if self._metric is None:
            self.task, self.num_classes = task, classes
            self._metric = self._make(task, classes)
        elif (task, classes) != (self.task, self.num_classes):
            raise ValueError(
                f"{type(self).__name__}: this batch looks {task} with {classes} classes, the first one {self.task} "
                f"with {self.num_classes} (y_pred {tuple(y_pred.shape)}, y {tuple(y.shape)})"
            )
        self._place(y_pred)
        self._metric.update(y_pred, y)
        self._updates += 1

    @staticmethod
    def _make(task: str, num_classes: int) -> Any:
        from torchmetrics import classification as tmc

        if task == "binary":
            return tmc.BinaryAccuracy(validate_args=False)
        if task == "multiclass":
            return tmc.MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        return tmc.MultilabelExactMatch(num_classes, validate_args=False)

    def compute(self) -> float:
        """The fraction of correct predictions since the last reset, over all processes, as a float."""
        return float(super().compute())
