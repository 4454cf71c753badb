"""Classification metrics with Ignite's names and defaults: ``Accuracy``, ``Precision``, ``Recall``,
``F1`` and ``Fbeta``.

Each takes ``(y_pred, y)`` per batch (``output_transform`` maps the engine output to it) and picks
the task from the first batch's shapes:

- **multiclass**: ``y_pred`` of shape ``(N, C, ...)`` (logits or probabilities), ``y`` of shape
  ``(N, ...)`` holding class indices; C is ``num_classes`` or read from ``y_pred``. With
  ``num_classes > 2`` given, ``y_pred`` may also hold class indices, shaped like ``y``.
- **binary**: ``y_pred`` shaped like ``y``: 0/1 labels, probabilities or logits (thresholded at 0.5
  after a sigmoid when outside [0, 1]).
- **multilabel** (``is_multilabel=True``): ``y_pred`` and ``y`` of shape ``(N, C, ...)``, 0/1 per label.

The arithmetic is torchmetrics' (``validate_args=False``: no per-batch host syncs for input checks).

Watch the averages, which differ between torchmetrics' classes and Ignite:

- ``Accuracy``: the fraction of correct predictions over all samples (micro), as Ignite computes;
  multilabel: a sample counts only when all its labels are right (exact match), as Ignite.
- ``Precision`` / ``Recall``: per class (a tensor of C values) by default, Ignite's
  ``average=False``; ``average=True`` or ``"macro"`` for the unweighted mean over classes,
  ``"micro"``, ``"weighted"``. Binary: the positive class's value.
- ``F1``: macro F1, the mean over classes of the per-class F1 (Ignite's ``Fbeta(beta=1)``) — not
  torchmetrics ``F1Score``'s micro default; ``average=`` as above. Classes absent from both the
  predictions and the targets are left out of macro means (torchmetrics' rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ember.metrics.metric import Metric, pair, require_torchmetrics

_AVERAGES = {
    False: "none",
    None: "none",
    "none": "none",
    True: "macro",
    "macro": "macro",
    "micro": "micro",
    "weighted": "weighted",
}


def _average(average: Any) -> str:
    try:
        return _AVERAGES[average]
    except (KeyError, TypeError):
        raise ValueError(
            f"average={average!r} is not supported; use False (per class), True or 'macro', 'micro' or 'weighted'"
        ) from None


class _Classification(Metric):
    """Builds its torchmetrics metric from the first batch: ``_make(task, num_classes)``."""

    def __init__(
        self,
        output_transform: Callable | None = None,
        num_classes: int | None = None,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        require_torchmetrics()
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
        ):
            raise ValueError(
                f"num_classes must be an int >= 2 or None (read from the first batch), got {num_classes!r}"
            )
        if not isinstance(is_multilabel, bool):
            raise TypeError(f"is_multilabel must be True or False, got {is_multilabel!r}")
        super().__init__(None, output_transform, device)
        self._classes_given = num_classes
        self.num_classes = num_classes
        self.is_multilabel = is_multilabel
        self.task: str | None = None

    def reset(self) -> None:
        if self._metric is not None:
            self._metric.reset()
        self._updates = 0

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, type(self).__name__)
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__}: y_pred and y must be tensors, got {type(y_pred).__name__}, {type(y).__name__}"
            )
        task, classes = self._task_of(y_pred, y)
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

    def _task_of(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[str, int | None]:
        name = type(self).__name__
        if self.is_multilabel:
            if y_pred.shape != y.shape or y_pred.ndim < 2:
                raise ValueError(
                    f"{name}(is_multilabel=True): y_pred and y must both be (N, C, ...), got {tuple(y_pred.shape)} and {tuple(y.shape)}"
                )
            return "multilabel", self._classes(y_pred.shape[1])
        if y_pred.ndim == y.ndim + 1 and y_pred.shape[:1] + y_pred.shape[2:] == y.shape:
            return "multiclass", self._classes(y_pred.shape[1])
        if y_pred.shape == y.shape:
            if self._classes_given is not None and self._classes_given > 2:
                return "multiclass", self._classes_given
            return "binary", None
        raise ValueError(
            f"{name}: cannot tell the task from y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)}; expected "
            "(N, C, ...) and (N, ...) for multiclass, equal shapes for binary (or multilabel with is_multilabel=True)"
        )

    def _classes(self, found: int) -> int:
        if self._classes_given is not None and self._classes_given != found:
            raise ValueError(
                f"{type(self).__name__}: num_classes={self._classes_given} but y_pred has {found} classes (dim 1)"
            )
        return found

    def _make(self, task: str, num_classes: int | None) -> Any:
        raise NotImplementedError


class Accuracy(_Classification):
    """Fraction of correct predictions (micro over all samples; multilabel: exact match). See the module doc."""

    def _make(self, task: str, num_classes: int | None) -> Any:
        from torchmetrics import classification as tmc

        if task == "binary":
            return tmc.BinaryAccuracy(validate_args=False)
        if task == "multiclass":
            return tmc.MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        return tmc.MultilabelExactMatch(num_classes, validate_args=False)


class _Averaged(_Classification):
    _names: tuple[str, str, str]  # torchmetrics class names: binary, multiclass, multilabel

    def __init__(
        self,
        output_transform: Callable | None = None,
        average: bool | str = False,
        num_classes: int | None = None,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        self.average = _average(average)
        super().__init__(output_transform, num_classes, is_multilabel, device)

    def _make(self, task: str, num_classes: int | None) -> Any:
        from torchmetrics import classification as tmc

        binary, multiclass, multilabel = (getattr(tmc, n) for n in self._names)
        extra = self._extra_args()
        if task == "binary":
            return binary(*extra, validate_args=False)
        cls = multiclass if task == "multiclass" else multilabel
        return cls(*extra, num_classes, average=self.average, validate_args=False)

    def _extra_args(self) -> tuple:
        return ()


class Precision(_Averaged):
    """Precision, per class by default (Ignite's ``average=False``); ``average=True``/"macro",
    "micro" or "weighted" for one number. See the module doc."""

    _names = ("BinaryPrecision", "MulticlassPrecision", "MultilabelPrecision")


class Recall(_Averaged):
    """Recall, per class by default (Ignite's ``average=False``); ``average=True``/"macro",
    "micro" or "weighted" for one number. See the module doc."""

    _names = ("BinaryRecall", "MulticlassRecall", "MultilabelRecall")


class F1(_Averaged):
    """Macro F1 by default: the mean of the per-class F1 scores (Ignite's ``Fbeta(beta=1)``);
    ``average=False`` for the per-class scores, "micro" or "weighted". See the module doc."""

    _names = ("BinaryF1Score", "MulticlassF1Score", "MultilabelF1Score")

    def __init__(
        self,
        output_transform: Callable | None = None,
        average: bool | str = "macro",
        num_classes: int | None = None,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(output_transform, average, num_classes, is_multilabel, device)


class Fbeta(_Averaged):
    """F-beta score, Ignite's ``Fbeta``: macro by default (``average=True``), ``average=False``
    per class, "micro" or "weighted". ``Fbeta(1.0)`` is :class:`F1`. See the module doc."""

    _names = ("BinaryFBetaScore", "MulticlassFBetaScore", "MultilabelFBetaScore")

    def __init__(
        self,
        beta: float,
        average: bool | str = True,
        output_transform: Callable | None = None,
        num_classes: int | None = None,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        self.beta = float(beta)
        super().__init__(output_transform, average, num_classes, is_multilabel, device)

    def _extra_args(self) -> tuple:
        return (self.beta,)
