"""Acting on a stop: the fit loop's ways of ending a run that are not a plain epoch end (see
docs/architecture.md, "who owns loop state": the rules themselves live in
:class:`~ember.trainer.progress.FitProgress`).

- :func:`agree_on_stop_requests`: in a distributed run, every process's requests merged so that all
  of them stop at the same point;
- :func:`save_preemption_checkpoint_and_exit`: a stop signal writes ``last.ckpt`` and exits;
- :func:`stop_requested_now`: asked between batches (before training, at an epoch's start), as
  Lightning asks before every batch.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ember.trainer.preemption import Preempted
from ember.trainer.progress import FitProgress

#: the reasons a stop request (not a limit) gives: they act before a batch as well as after one
REQUESTED = ("should_stop", "max_time")


def stop_requested_now(trainer: Any, progress: FitProgress) -> bool:
    """Whether ``should_stop`` (or ``max_time``, which sets it) ends the run at this point, between
    batches: as Lightning, asked before every batch, so a request made in ``on_train_epoch_start``
    runs no batch of the epoch. A signal or max_steps is left to the next batch's end. Distributed:
    the processes agree first (call it on all of them at the same point)."""
    if trainer.world_size > 1:
        agree_on_stop_requests(trainer, progress)
    elif progress.global_step < progress.ask_at_step and not progress.past_deadline():  # nothing pending
        return False
    return progress.stop_reason() in REQUESTED


def agree_on_stop_requests(trainer: Any, progress: FitProgress) -> None:
    """Merge every process's stop requests (should_stop, a signal, max_time) so that all of them
    decide alike: one collective, every process at the same point."""
    local = [progress.should_stop, progress.signal is not None, progress.time_up or progress.past_deadline()]
    tensor = torch.tensor(local, dtype=torch.float32, device=trainer.root_device)
    should_stop, signal, time_up = (bool(f) for f in trainer.strategy.reduce(tensor, "max").tolist())
    if signal and progress.signal is None:
        progress.signal = "a stop signal (received by another process)"
    if time_up:
        progress.time_up = True
    if should_stop and not progress.should_stop:
        progress.request_stop()
    progress.ask_now()


def save_preemption_checkpoint_and_exit(trainer: Any, progress: FitProgress) -> None:
    """Write ``last.ckpt`` (in ModelCheckpoint's folder, else the run's) and raise :class:`Preempted`."""
    cb = trainer.checkpoint_callback
    directory = cb.dirpath if cb is not None and cb.dirpath else os.path.join(trainer.log_dir, "checkpoints")
    path = os.path.join(directory, "last.ckpt")
    trainer._checkpoint.save(path, False)  # this process alone: no barrier (the others may not be stopping)
    if cb is not None:
        cb.last_model_path = path
    raise Preempted(progress.signal or "a stop signal", path)
