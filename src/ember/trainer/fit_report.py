"""The one line that ends a ``fit``: why it stopped, the best checkpoint and its score, and where the
logs are. Printed by rank zero on the console, like Ember's other run messages ("ember: loaded
checkpoint ...")."""

from __future__ import annotations

import math
import os
from typing import Any


def fit_end_line(trainer: Any) -> str:
    """``ember: fit stopped: <why>; best checkpoint '<path>' (<monitor>=<score>); logs in '<dir>'``
    (the best checkpoint when a ModelCheckpoint monitors a metric, the logs when there are loggers)."""
    parts = [f"ember: fit stopped: {trainer.fit_progress.describe_stop(_stop_request_detail(trainer))}"]
    cb = trainer.checkpoint_callback
    if cb is not None and cb.monitor and cb.best_model_path:
        score = cb.best_model_score
        shown = "" if score is None else f" ({cb.monitor}={_number(float(score))})"
        parts.append(f"best checkpoint {_shown_path(cb.best_model_path)!r}{shown}")
    if trainer.loggers and trainer.logger.log_dir is not None:
        parts.append(f"logs in {_shown_path(trainer.log_dir)!r}")
    return "; ".join(parts)


def report_fit_end(trainer: Any, status: str) -> None:
    """Print :func:`fit_end_line` on rank zero when the fit ended normally or on a stop signal."""
    progress = trainer.fit_progress
    if not trainer.is_global_zero:
        return
    if status == "success" or (status == "interrupted" and progress.stopped_by == "signal"):
        print(fit_end_line(trainer), flush=True)


def _stop_request_detail(trainer: Any) -> str | None:
    """Who set ``should_stop`` and why: an EarlyStopping callback that stopped, with its message."""
    dispatch = trainer._stage_dispatch
    for cb in dispatch.callbacks if dispatch is not None else trainer.callbacks:
        message = getattr(cb, "stopping_reason_message", None)
        if isinstance(message, str) and message:
            return f"early stopping: {message}"
    return None


def _shown_path(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)
