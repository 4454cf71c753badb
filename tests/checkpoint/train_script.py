"""A small training job for the kill/preemption tests: checkpoints every 3 steps (top-2 by
``train_loss`` plus ``last.ckpt``), resumes from ``"last"``, writes its final state to ``final.pt``.

Run as a script (``python train_script.py ROOT [--resume] [--step-sleep S] [--slow-save S]``) it
prints one line per event on stdout: ``START <global_step>``, ``STEP <global_step>``,
``SAVING <file>`` / ``SAVED <file>`` around every checkpoint write, ``DONE``. The tests also call
:func:`run` in a forked child, which reports the same events through a callback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resume_kit import ResumeNet, make_loader, quiet, seed_all

from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint

EPOCHS = 4
SAMPLES = 120  # 30 batches of 4 per epoch: 120 optimizer steps in all


class Report(Callback):
    def __init__(self, report: Callable[[str], None], step_sleep: float, sleep_from: int = 1) -> None:
        self.report = report
        self.step_sleep = step_sleep
        self.sleep_from = sleep_from

    def on_train_start(self, trainer: Any, module: Any) -> None:
        self.report(f"START {trainer.global_step}")

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.step_sleep and trainer.global_step >= self.sleep_from:
            time.sleep(self.step_sleep)
        self.report(f"STEP {trainer.global_step}")


def slow_writes(report: Callable[[str], None], pause: float) -> None:
    """Make every file write report itself and take a while (4 chunks, ``pause`` s apart), so a kill
    can land inside it. Ember's own atomic write code runs unchanged around it."""
    real_fdopen = os.fdopen

    class Slow:
        def __init__(self, f: Any, path: str) -> None:
            self.f, self.path = f, path

        def write(self, data: bytes) -> int:
            report(f"SAVING {os.path.basename(self.path)}")
            n = len(data)
            for i in range(4):
                self.f.write(data[i * n // 4 : (i + 1) * n // 4])
                self.f.flush()
                time.sleep(pause)
            return n

        def __enter__(self) -> Slow:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.f.close()
            if exc[0] is None:
                report(f"WRITTEN {os.path.basename(self.path)}")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        return Slow(real_fdopen(fd, *args, **kwargs), os.readlink(f"/proc/self/fd/{fd}"))

    os.fdopen = fdopen  # type: ignore[assignment]

    import ember.checkpoint.io as ckpt_io

    real_write = ckpt_io.atomic_write_bytes

    def reporting_write(path: Any, data: bytes) -> None:
        real_write(path, data)
        report(f"SAVED {os.path.basename(os.fspath(path))}")

    ckpt_io.atomic_write_bytes = reporting_write


def run(
    root: Path,
    resume: bool,
    report: Callable[[str], None],
    step_sleep: float = 0.0,
    slow_save: float = 0.0,
    sleep_from: int = 1,
) -> None:
    torch.set_num_threads(1)
    if slow_save:
        slow_writes(report, slow_save)
    seed_all()
    model = ResumeNet(dropout=0.1, scheduler="step")
    ckpt = ModelCheckpoint(
        dirpath=root / "ckpts", every_n_train_steps=3, monitor="train_loss", save_top_k=2, save_last=True
    )
    trainer = quiet(
        root, max_epochs=EPOCHS, callbacks=[ckpt, Report(report, step_sleep, sleep_from)], log_every_n_steps=1
    )
    trainer.fit(model, make_loader(n=SAMPLES), make_loader(shuffle=False), ckpt_path="last" if resume else None)
    final = {
        "model": model.state_dict(),
        "optimizer": trainer.optimizers[0].state_dict(),
        "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
        "global_step": trainer.global_step,
    }
    torch.save(final, root / "final.pt")
    report("DONE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--slow-save", type=float, default=0.0)
    parser.add_argument("--sleep-from", type=int, default=1, help="sleep only from this step on")
    args = parser.parse_args()

    def report(line: str) -> None:
        print(line, flush=True)

    run(args.root, args.resume, report, args.step_sleep, args.slow_save, args.sleep_from)


if __name__ == "__main__":
    main()
