"""``PruningCallback``: report a validation metric to an Optuna trial and stop the trial when
its pruner says so."""

from __future__ import annotations

import math
from typing import Any

from ember.callbacks.callback import Callback
from ember.tune._deps import import_optuna


class PruningCallback(Callback):
    """Reports ``monitor`` to ``trial`` after every validation run of ``fit`` (never during the
    sanity check) and, when ``trial.should_prune()`` says so, raises ``optuna.TrialPruned`` out of
    ``trainer.fit``: ``study.optimize`` and :func:`ember.tune.optimize` record the trial as PRUNED,
    not FAILED.

    The reported step is the index of the validation run within the fit: the epoch index when
    validating once per epoch, and comparable between trials whatever their batch size.

    Example::

        def objective(trial):
            model = MyModel(lr=trial.suggest_float("lr", 1e-5, 1e-1, log=True))
            trainer = ember.Trainer(max_epochs=20, callbacks=[PruningCallback(trial, monitor="val_loss")])
            trainer.fit(model, datamodule=data)
            return trainer.callback_metrics["val_loss"].item()
    """

    def __init__(self, trial: Any, monitor: str = "val_loss") -> None:
        if not (callable(getattr(trial, "report", None)) and callable(getattr(trial, "should_prune", None))):
            raise TypeError(
                f"trial must be an optuna.Trial (with report() and should_prune()), got {type(trial).__name__}"
            )
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor={monitor!r} must be the non-empty name of a logged metric, e.g. 'val_loss'")
        self.trial = trial
        self.monitor = monitor
        self._fitting = False
        self._validations = 0

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._fitting = stage == "fit"
        self._validations = 0

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._fitting = False

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._fitting or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise ValueError(
                f"PruningCallback(monitor={self.monitor!r}): {self.monitor!r} was not logged during validation; "
                f"logged: {sorted(metrics)}"
            )
        value = float(metrics[self.monitor])
        step = self._validations
        self._validations += 1
        self.trial.report(value, step)
        if self.trial.should_prune():
            optuna = import_optuna()
            shown = f"{value:.6g}" if math.isfinite(value) else str(value)
            raise optuna.TrialPruned(
                f"trial {self.trial.number} pruned at validation {step} (epoch {trainer.current_epoch}): {self.monitor}={shown}"
            )
