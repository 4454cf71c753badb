"""The Trainer: Lightning-style ``fit/validate/test/predict`` on top of the Engine."""

from ember.trainer.trainer import Trainer

__all__ = ["Trainer"]
