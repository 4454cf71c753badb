"""Checking the ``Trainer(...)`` arguments at the boundary: each error names the argument, the value
and what is allowed. Also the default callbacks and loggers a Trainer adds."""

from __future__ import annotations

import datetime
import importlib.util
import os
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.model_summary import ModelSummary
from ember.callbacks.progress import ProgressBar
from ember.loggers.csv_logger import CSVLogger
from ember.runtime.clipping import check_clip_algorithm
from ember.trainer.data import check_limit


def int_arg(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    """``value`` if it is an int ``>= minimum`` (or None when allowed), else a ``ValueError``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name}={value!r} is not valid; it must be {allowed}")
    return value


def parse_max_time(value: Any) -> float | None:
    """``max_time`` in seconds: from ``'DD:HH:MM:SS'``, a dict of timedelta arguments or a timedelta."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, dict):
        try:
            seconds = datetime.timedelta(**value).total_seconds()
        except TypeError as err:
            raise ValueError(f"max_time={value!r}: {err}") from None
    elif isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(f"max_time={value!r}: use 'DD:HH:MM:SS', a dict of timedelta arguments, or a timedelta")
        d, h, m, s = map(int, parts)
        seconds = datetime.timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()
    else:
        raise TypeError(f"max_time={value!r}: use 'DD:HH:MM:SS', a dict of timedelta arguments, or a timedelta")
    if seconds < 0:  # 0 is allowed, as Lightning: the run stops before its first batch
        raise ValueError(f"max_time={value!r} must not be a negative duration")
    return seconds


def batch_limits(train: Any, val: Any, test: Any, predict: Any) -> dict[str, int | float]:
    """The ``limit_*_batches`` arguments, checked, by stage."""
    named = (
        ("train", "train", train),
        ("validate", "val", val),
        ("test", "test", test),
        ("predict", "predict", predict),
    )
    # None is Lightning's default: all batches
    return {
        stage: check_limit(f"limit_{name}_batches", 1.0 if value is None else value) for stage, name, value in named
    }


def overfit_batches(value: Any) -> int | float:
    """``overfit_batches``: 0 (off), a fraction in [0, 1] or a number of batches."""
    return check_limit("overfit_batches", value)


def stopping_limits(max_epochs: Any, min_epochs: Any, max_steps: Any, min_steps: Any, max_time: Any) -> tuple:
    """``(max_epochs, min_epochs, max_steps, min_steps, max_time in seconds)``, checked."""
    if max_steps == -1:  # Lightning's spelling of "no limit"
        max_steps = None
    endless = max_epochs == -1  # Lightning's spelling of "train until something else stops it"
    if endless:
        max_epochs = None
    limits = (
        int_arg("max_epochs", max_epochs, 0, allow_none=True),
        int_arg("min_epochs", min_epochs, 0, allow_none=True),
        int_arg("max_steps", max_steps, 1, allow_none=True),
        int_arg("min_steps", min_steps, 0, allow_none=True),
        parse_max_time(max_time),
    )
    if limits[0] is None and limits[2] is None and limits[4] is None and not endless:
        raise ValueError("max_epochs=None needs max_steps or max_time, or training would never end")
    for low, high, names in ((limits[1], limits[0], "epochs"), (limits[3], limits[2], "steps")):
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_{names}={low} is more than max_{names}={high}; the run could never satisfy both")
    return limits


def check_val_check_interval(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"val_check_interval={value!r}: use a float fraction of an epoch or an int batch count")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError(f"val_check_interval={value!r}: a fraction must be in (0.0, 1.0]")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"val_check_interval={value!r}: a batch count must be >= 1")
    return value


def check_val_every_n_epoch(value: Any, val_check_interval: int | float) -> int | None:
    """An int >= 1, or None (validation every ``val_check_interval`` batches across epochs, which must be an int)."""
    if value is None:
        if isinstance(val_check_interval, float):
            raise ValueError(
                f"check_val_every_n_epoch=None counts val_check_interval in batches across epochs; "
                f"val_check_interval={val_check_interval!r} must be an int then"
            )
        return None
    return int_arg("check_val_every_n_epoch", value, 1)


def check_gradient_clipping(clip_val: Any, algorithm: Any) -> tuple[float | None, str]:
    if clip_val is not None and (isinstance(clip_val, bool) or not isinstance(clip_val, (int, float)) or clip_val < 0):
        raise ValueError(f"gradient_clip_val={clip_val!r} must be a non-negative number or None")
    return clip_val or None, check_clip_algorithm(algorithm)


def check_flags(**flags: Any) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")


def check_root_dir(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"default_root_dir must be a path, got {value!r}")
    return os.fspath(value)


def apply_deterministic(value: Any) -> bool | str:
    """``deterministic``: True (deterministic algorithms, an error where torch has none), "warn"
    (a warning instead) or False."""
    if not isinstance(value, bool) and value != "warn":
        raise TypeError(f"deterministic must be True, False or 'warn', got {value!r}")
    if value:
        # cuBLAS needs a fixed workspace for deterministic matmuls on CUDA (as Lightning sets it)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=value == "warn")
    return value


def fast_dev_run_batches(value: Any) -> int:
    """How many batches ``fast_dev_run`` runs (0: off)."""
    if isinstance(value, bool):
        return 1 if value else 0
    return int_arg("fast_dev_run", value, 0) or 0


def init_callbacks(callbacks: Any, progress: bool, summary: bool) -> list[Any]:
    """The user's callbacks, checked, plus a progress bar and a model summary unless turned off."""
    if callbacks is None:
        callbacks = []
    elif not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if isinstance(cb, (type, str)) or cb is None or not (isinstance(cb, Callback) or _has_a_hook(cb)):
            raise TypeError(
                f"callbacks[{i}]={cb!r} must be a callback instance (an ember.Callback such as EarlyStopping(...), "
                f"or an object with Callback hooks), not {type(cb).__name__}"
            )
    if progress and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(ProgressBar())
    if summary and not any(isinstance(c, ModelSummary) for c in callbacks):
        callbacks.append(ModelSummary())
    check_state_keys(callbacks)
    return checkpoints_last(callbacks)


def check_state_keys(callbacks: list[Any]) -> None:
    """As Lightning: two callbacks with state (a ``state_dict`` of their own) may not share a
    ``state_key``, or one's checkpointed state would overwrite the other's (a ``RuntimeError``)."""
    seen: set[str] = set()
    for cb in callbacks:
        own = getattr(type(cb), "state_dict", Callback.state_dict) is not Callback.state_dict
        key = getattr(cb, "state_key", None) if own else None
        if key is None:
            continue
        if key in seen:
            raise RuntimeError(
                f"Found more than one stateful callback of type `{type(cb).__name__}` with state_key {key!r}: "
                "their checkpointed states would collide. Give each a distinct state_key (for EarlyStopping and "
                "ModelCheckpoint, distinct monitor/mode or other arguments)"
            )
        seen.add(key)


def checkpoints_last(callbacks: list[Any]) -> list[Any]:
    """``callbacks`` with the ModelCheckpoints moved to the end, each group in its order: the order of
    ``trainer.callbacks`` in Lightning. (Hooks run by ``priority`` either way; see ember.callbacks.callback.)"""
    others = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    return others + [c for c in callbacks if isinstance(c, ModelCheckpoint)]


def _has_a_hook(obj: Any) -> bool:
    return any(callable(getattr(obj, name, None)) for name in vars(Callback) if name.startswith("on_"))


def init_loggers(logger: Any, root_dir: str) -> list[Any]:
    """``True``: TensorBoard under ``root_dir/ember_logs`` when tensorboard is installed, else CSV
    there; ``False``/``None``: none; a logger or a list of loggers as given."""
    if logger is True:
        if importlib.util.find_spec("tensorboard") is not None:
            from ember.loggers.tensorboard_logger import TensorBoardLogger

            return [TensorBoardLogger(root_dir, name="ember_logs")]
        return [CSVLogger(root_dir, name="ember_logs")]
    if logger is False or logger is None:
        return []
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for i, lg in enumerate(loggers):
        if isinstance(lg, type) or not callable(getattr(lg, "log_metrics", None)):
            raise TypeError(
                f"logger[{i}]={lg!r} is not a logger instance; pass True, False, a logger such as "
                "TensorBoardLogger('runs') or a list of them"
            )
    return loggers
