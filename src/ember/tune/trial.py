"""One trial's side of a study: its directory and the record of the run it made."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def trial_dir(trial: Any) -> Path:
    """The directory of ``trial`` inside :func:`ember.tune.optimize`: pass it to ``Trainer(default_root_dir=...)``
    in a function objective so each trial's logs and checkpoints stay apart."""
    root = trial.user_attrs.get("root_dir")
    if root is None:
        raise ValueError(
            f"trial {trial.number} has no directory: trial_dir() works for trials run by ember.tune.optimize"
        )
    return Path(root)


def record_run(trial: Any, trainer: Any) -> None:
    """Store where ``trainer``'s run left its results as user attrs of ``trial``: ``log_dir``,
    ``checkpoint_path`` (the best checkpoint, when the trainer has a checkpoint callback),
    ``epochs``, ``global_step`` and ``params``."""
    trial.set_user_attr("params", dict(trial.params))
    trial.set_user_attr("log_dir", str(trainer.log_dir))
    trial.set_user_attr("epochs", int(trainer.current_epoch))
    trial.set_user_attr("global_step", int(trainer.global_step))
    checkpoint = getattr(getattr(trainer, "checkpoint_callback", None), "best_model_path", None)
    if checkpoint:
        trial.set_user_attr("checkpoint_path", str(checkpoint))
