"""Experiment loggers: where logged metrics and hyperparameters are written.

``TensorBoardLogger`` and ``MLFlowLogger`` import tensorboard / mlflow only when built; Ignite's
spellings ``TensorboardLogger`` and ``MLflowLogger`` name the same classes.
"""

from ember.loggers.base import Logger
from ember.loggers.csv_logger import CSVLogger
from ember.loggers.handlers import OptimizerParamsHandler, OutputHandler, global_step_from_engine
from ember.loggers.mlflow_logger import MLFlowLogger, MLflowLogger
from ember.loggers.send import send_metrics
from ember.loggers.tensorboard_logger import TensorBoardLogger, TensorboardLogger
from ember.loggers.weights_handlers import (
    GradsHistHandler,
    GradsScalarHandler,
    WeightsHistHandler,
    WeightsScalarHandler,
)

__all__ = [
    "CSVLogger",
    "GradsHistHandler",
    "GradsScalarHandler",
    "Logger",
    "MLFlowLogger",
    "MLflowLogger",
    "OptimizerParamsHandler",
    "OutputHandler",
    "TensorBoardLogger",
    "TensorboardLogger",
    "WeightsHistHandler",
    "WeightsScalarHandler",
    "global_step_from_engine",
    "send_metrics",
]
