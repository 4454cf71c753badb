"""Checkpoints you can trust: plain data, atomic writes, safe loads, versioned format."""

from ember.checkpoint.format import (
    FORMAT_VERSION,
    MIGRATIONS,
    load_checkpoint,
    migrate,
    new_checkpoint,
    save_checkpoint,
)
from ember.checkpoint.io import CheckpointError
from ember.checkpoint.rng import capture_rng_states, restore_rng_states

__all__ = [
    "FORMAT_VERSION",
    "MIGRATIONS",
    "CheckpointError",
    "capture_rng_states",
    "load_checkpoint",
    "migrate",
    "new_checkpoint",
    "restore_rng_states",
    "save_checkpoint",
]
