"""Engine-level handlers with Ignite 0.5's names: checkpointing, early stopping, NaN guard, timer."""

from ember.handlers.checkpoint import Checkpoint, ModelCheckpoint
from ember.handlers.early_stopping import EarlyStopping
from ember.handlers.terminate_on_nan import TerminateOnNan
from ember.handlers.timer import Timer

__all__ = ["Checkpoint", "EarlyStopping", "ModelCheckpoint", "TerminateOnNan", "Timer"]
