"""A small training job for the kill-and-count test of the logs (``test_resume_logs.py``): 3 epochs of
10 batches, ``train_loss`` logged every step to a CSVLogger and a TensorBoardLogger (both in
``ROOT/logs/version_N``), a checkpoint every 3 steps into the default folder
(``<log_dir>/checkpoints``), dropout and a shuffled loader so that only an exact resume gives the
same values.

``python resume_logs_script.py ROOT [--resume CKPT] [--hang-at STEP]`` prints ``START <global_step>``
and, with ``--hang-at``, makes everything logged so far durable at that step (as an epoch end or a
time-based flush would), prints ``HANG <global_step>`` and waits to be killed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoint"))

from resume_kit import ResumeNet, make_loader, quiet, seed_all

from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.loggers import CSVLogger, TensorBoardLogger

EPOCHS = 3
SAMPLES = 40  # 10 batches of 4 per epoch: 30 optimizer steps
EVERY = 3


class Hang(Callback):
    """Reports the start; at global step ``at``, saves the loggers, reports and waits to be killed."""

    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_train_start(self, trainer: Any, module: Any) -> None:
        print(f"START {trainer.global_step}", flush=True)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.at:
            for lg in trainer.loggers:
                lg.save()
            print(f"HANG {trainer.global_step}", flush=True)
            while True:  # until SIGKILL
                time.sleep(1.0)


def run(root: Path, ckpt_path: str | None = None, hang_at: int | None = None) -> Any:
    torch.set_num_threads(1)
    seed_all()
    model = ResumeNet(dropout=0.2, scheduler="step")
    loggers = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tb", flush_secs=0.05)]
    trainer = quiet(
        root,
        max_epochs=EPOCHS,
        logger=loggers,
        log_every_n_steps=1,
        callbacks=[ModelCheckpoint(every_n_train_steps=EVERY, save_top_k=-1), Hang(hang_at)],
    )
    trainer.fit(model, make_loader(n=SAMPLES), ckpt_path=ckpt_path)
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--hang-at", type=int, default=None)
    args = parser.parse_args()
    run(args.root, args.resume, args.hang_at)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
