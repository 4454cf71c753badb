"""``EarlyStopping``: stop fitting when a monitored metric stops improving (Lightning's arguments,
its ``stopping_reason``/``stopping_reason_message`` and its messages)."""

from __future__ import annotations

import math
import warnings
from enum import Enum
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.checkpoint.monitor import check_mode, improves
from ember.engine.events import Priority

_ORDER = {"min": "<", "max": ">"}


class EarlyStoppingReason(Enum):
    """Why :class:`EarlyStopping` stopped the run (Lightning's values)."""

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(Callback):
    """Sets ``trainer.should_stop`` after ``patience`` checks without an improvement of more than
    ``min_delta``; also on a non-finite value (``check_finite``), on reaching
    ``stopping_threshold``, or on passing ``divergence_threshold``.

    Checks run after validation at the end of each epoch (or, with ``check_on_train_epoch_end=False``
    and mid-epoch validation, after every validation run).

    After a stop, ``stopping_reason`` is an :class:`EarlyStoppingReason` and ``stopping_reason_message``
    says it in words (Lightning's messages); with ``verbose=True`` each check's outcome is printed
    (by every process, prefixed with its rank, unless ``log_rank_zero_only=True``).
    """

    priority = Priority.EARLY_STOPPING

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be the name of a logged metric, got {monitor!r}")
        check_mode(mode)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience={patience!r} must be a non-negative integer")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)):
            raise TypeError(f"min_delta={min_delta!r} must be a number")
        self.monitor = monitor
        # as Lightning: signed in the direction of improvement, so a negative min_delta is a tolerance
        # (mode="min": a value up to |min_delta| above the best still counts as an improvement)
        self.min_delta = float(min_delta) * (1.0 if mode == "max" else -1.0)
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.check_on_train_epoch_end = check_on_train_epoch_end
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = torch.tensor(math.inf if mode == "min" else -math.inf)
        self.log_rank_zero_only = log_rank_zero_only
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._at_epoch_end(trainer):
            self._check(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.fitting or self._at_epoch_end(trainer):
            return
        self._check(trainer)

    def _at_epoch_end(self, trainer: Any) -> bool:
        if self.check_on_train_epoch_end is not None:
            return self.check_on_train_epoch_end
        # as Lightning: validating several times an epoch, or not every epoch, checks after validation
        return trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1

    def _check(self, trainer: Any) -> None:
        if trainer.fast_dev_run:  # as Lightning: a fast_dev_run never stops early
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            # Lightning's message and error type (RuntimeError; a warning with strict=False and verbose)
            message = (
                f"Early stopping conditioned on metric `{self.monitor}` which is not available. Pass in or modify "
                f"your `EarlyStopping` callback to use any of the following: `{'`, `'.join(metrics)}`"
            )
            if self.strict:
                raise RuntimeError(message + ". Pass strict=False to skip the check instead")
            if self.verbose:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            return
        current = float(metrics[self.monitor])
        stop, message = self._evaluate(current)
        if stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = message
            trainer.should_stop = True
        if message and self.verbose:
            self._report(trainer, message)

    def _report(self, trainer: Any, message: str) -> None:
        """Print a check's outcome, as Lightning logs it: prefixed with the rank when there are several."""
        if trainer.world_size == 1:
            print(message)
        elif not self.log_rank_zero_only or trainer.is_global_zero:
            print(f"[rank: {trainer.global_rank}] {message}")

    def _evaluate(self, current: float) -> tuple[bool, str | None]:
        """(stop?, message); sets ``stopping_reason`` on a stop. The rules and their order are
        Lightning's: non-finite, stopping threshold, divergence threshold, improvement, patience."""
        best = float(self.best_score)
        monitor, order = self.monitor, _ORDER[self.mode]
        if self.check_finite and not math.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, (
                f"Monitored metric {monitor} = {current} is not finite. Previous best value was {best:.3f}. "
                "Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and improves(current, self.stopping_threshold, self.mode):
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            return True, (
                f"Stopping threshold reached: {monitor} = {current:.6g} {order} {self.stopping_threshold}. "
                "Signaling Trainer to stop."
            )
        # diverged: the threshold itself is better than the current value
        if self.divergence_threshold is not None and improves(self.divergence_threshold, current, self.mode):
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            return True, (
                f"Divergence threshold reached: {monitor} = {current:.6g} {order} {self.divergence_threshold}. "
                "Signaling Trainer to stop."
            )
        if improves(current - self.min_delta, best, self.mode):
            self.best_score = torch.tensor(current)
            self.wait_count = 0
            if not math.isfinite(best):
                return False, f"Metric {monitor} improved. New best score: {current:.3f}"
            return False, (
                f"Metric {monitor} improved by {abs(best - current):.3f} >= min_delta = {abs(self.min_delta)}. "
                f"New best score: {current:.3f}"
            )
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            return True, (
                f"Monitored metric {monitor} did not improve in the last {self.wait_count} records. "
                f"Best score: {best:.3f}. Signaling Trainer to stop."
            )
        return False, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": float(self.best_score),
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count = int(state["wait_count"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best_score = torch.tensor(float(state["best_score"]))
        patience = state.get("patience", self.patience)  # as Lightning: the checkpoint's patience wins
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping state: patience={patience!r} must be a non-negative integer")
        self.patience = patience
        reason = state.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value)
        try:
            self.stopping_reason = EarlyStoppingReason(reason)
        except ValueError:
            raise ValueError(
                f"EarlyStopping state: stopping_reason={reason!r} is not one of "
                f"{[r.value for r in EarlyStoppingReason]}"
            ) from None
        message = state.get("stopping_reason_message")
        self.stopping_reason_message = message if isinstance(message, str) else None
