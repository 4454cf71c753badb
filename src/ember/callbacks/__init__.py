"""Callbacks: things that attach to a Trainer run through Lightning's hook names."""

from ember.callbacks.callback import Callback
from ember.callbacks.model_summary import ModelSummary
from ember.callbacks.progress import ProgressBar, TQDMProgressBar

__all__ = ["Callback", "ModelSummary", "ProgressBar", "TQDMProgressBar"]
