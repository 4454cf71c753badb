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

__all__ = [
    "CSVLogger",
    "Logger",
    "MLFlowLogger",
    "MLflowLogger",
    "OptimizerParamsHandler",
    "OutputHandler",
    "TensorBoardLogger",
    "TensorboardLogger",
    "global_step_from_engine",
    "send_metrics",
]
