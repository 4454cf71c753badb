"""Experiment loggers: where logged metrics and hyperparameters are written."""

from ember.loggers.base import Logger
from ember.loggers.csv_logger import CSVLogger

__all__ = ["CSVLogger", "Logger"]
