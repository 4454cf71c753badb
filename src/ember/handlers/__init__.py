"""Engine-level handlers with Ignite 0.5's names: checkpointing, early stopping, NaN guard, timer,
and ``global_step_from_engine``.

``TensorboardLogger`` and ``MLflowLogger`` are importable from here too, as from ``ignite.handlers``
(they live in :mod:`ember.loggers` and are imported on first use).
"""

from typing import Any

from ember.handlers.checkpoint import Checkpoint, CheckpointEvents
from ember.handlers.early_stopping import EarlyStopping
from ember.handlers.model_checkpoint import ModelCheckpoint
from ember.handlers.savers import BaseSaveHandler, DiskSaver
from ember.handlers.terminate_on_nan import TerminateOnNan
from ember.handlers.timer import Timer
from ember.handlers.utils import global_step_from_engine

__all__ = [
    "BaseSaveHandler",
    "Checkpoint",
    "CheckpointEvents",
    "DiskSaver",
    "EarlyStopping",
    "MLflowLogger",
    "ModelCheckpoint",
    "TensorboardLogger",
    "TerminateOnNan",
    "Timer",
    "global_step_from_engine",
]


def __getattr__(name: str) -> Any:
    # the loggers import ember.handlers.utils: importing them lazily keeps either package importable first
    if name == "TensorboardLogger":
        from ember.loggers.tensorboard_logger import TensorboardLogger

        return TensorboardLogger
    if name == "MLflowLogger":
        from ember.loggers.mlflow_logger import MLflowLogger

        return MLflowLogger
    raise AttributeError(f"module 'ember.handlers' has no attribute {name!r}")
