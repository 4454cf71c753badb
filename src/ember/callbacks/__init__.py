"""Callbacks: things that attach to a Trainer run through Lightning's hook names."""

from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from ember.callbacks.lr_monitor import LearningRateMonitor
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.model_summary import ModelSummary
from ember.callbacks.prediction_writer import BasePredictionWriter
from ember.callbacks.progress import ProgressBar, TQDMProgressBar

__all__ = [
    "BasePredictionWriter",
    "Callback",
    "EarlyStopping",
    "EarlyStoppingReason",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "ProgressBar",
    "TQDMProgressBar",
]
