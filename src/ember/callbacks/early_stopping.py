"""``EarlyStopping``: stop fitting when a monitored metric stops improving (Lightning's arguments)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.checkpoint.monitor import check_mode, improves
from ember.engine.events import Priority


class EarlyStopping(Callback):
    """Sets ``trainer.should_stop`` after ``patience`` checks without an improvement of more than
    ``min_delta``; also on a non-finite value (``check_finite``), on reaching
    ``stopping_threshold``, or on passing ``divergence_threshold``.

    Checks run after validation at the end of each epoch (or, with ``check_on_train_epoch_end=False``
    and mid-epoch validation, after every validation run).
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
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be the name of a logged metric, got {monitor!r}")
        check_mode(mode)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience={patience!r} must be a non-negative integer")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)):
            raise TypeError(f"min_delta={min_delta!r} must be a number")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
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
        self.stopping_reason: str | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if self._at_epoch_end(trainer):
            self._check(trainer)

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if trainer.sanity_checking or not trainer.fitting or self._at_epoch_end(trainer):
            return
        self._check(trainer)

    def _at_epoch_end(self, trainer: Any) -> bool:
        if self.check_on_train_epoch_end is not None:
            return self.check_on_train_epoch_end
        # as Lightning: validating several times an epoch, or not every epoch, checks after validation
        return trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1

    def _check(self, trainer: Any) -> None:
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            if self.strict:
                raise ValueError(
                    f"EarlyStopping(monitor={self.monitor!r}): that metric was never logged; "
                    f"logged metrics are: {sorted(metrics)}. Pass strict=False to skip the check instead"
                )
            return
        current = float(metrics[self.monitor])
        stop, reason = self._evaluate(current)
        if stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason = reason
            trainer.should_stop = True
            if self.verbose and trainer.is_global_zero:
                print(f"EarlyStopping: {reason}")

    def _evaluate(self, current: float) -> tuple[bool, str | None]:
        best = float(self.best_score)
        if self.check_finite and not math.isfinite(current):
            return True, f"{self.monitor}={current} is not finite; stopping (best was {best:.6g})"
        if self.stopping_threshold is not None and (
            improves(current, self.stopping_threshold, self.mode) or current == self.stopping_threshold
        ):
            return True, f"{self.monitor}={current:.6g} reached stopping_threshold={self.stopping_threshold}"
        # diverged: the threshold itself is better than the current value
        if self.divergence_threshold is not None and improves(self.divergence_threshold, current, self.mode):
            return True, f"{self.monitor}={current:.6g} passed divergence_threshold={self.divergence_threshold}"
        if improves(current, best, self.mode, self.min_delta):
            self.best_score = torch.tensor(current)
            self.wait_count = 0
            return False, None
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, f"{self.monitor} did not improve by more than {self.min_delta} for {self.wait_count} checks (best {best:.6g})"
        return False, None

    def state_dict(self) -> dict[str, Any]:
        return {"wait_count": self.wait_count, "stopped_epoch": self.stopped_epoch, "best_score": float(self.best_score), "patience": self.patience}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count = int(state["wait_count"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best_score = torch.tensor(float(state["best_score"]))
