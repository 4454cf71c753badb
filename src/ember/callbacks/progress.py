"""A tqdm progress bar that redraws on a clock (10 Hz by default), never once per step."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ember.callbacks.callback import Callback
from ember.engine.events import Priority


class ProgressBar(Callback):
    """Shows training/validation/test/predict progress with the values logged with ``prog_bar=True``.

    Per step it costs one clock read; the bar and its values (one host transfer) are refreshed at
    most ``refresh_rate_hz`` times a second. ``file`` defaults to stderr; the bar hides itself when
    that is not a terminal unless ``force=True``.
    """

    priority = Priority.LOGGER

    def __init__(self, refresh_rate_hz: float = 10.0, file: TextIO | None = None, force: bool = False, leave: bool = True):
        if not isinstance(refresh_rate_hz, (int, float)) or isinstance(refresh_rate_hz, bool) or refresh_rate_hz <= 0:
            raise ValueError(f"refresh_rate_hz must be a positive number, got {refresh_rate_hz!r}")
        self.interval = 1.0 / refresh_rate_hz
        self.file = file
        self.force = force
        self.leave = leave
        self._bar: Any = None
        self._eval_bar: Any = None
        self._next = 0.0
        self._done = 0
        self._rank_zero = True

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        self._rank_zero = trainer.is_global_zero  # distributed: only rank zero draws (the others get disabled bars)

    def _make(self, desc: str, total: int | None, position: int = 0, leave: bool = True) -> Any:
        from tqdm.auto import tqdm

        file = self.file if self.file is not None else sys.stderr
        return tqdm(
            desc=desc,
            total=total,
            file=file,
            disable=True if not self._rank_zero else (False if self.force else None),
            leave=leave,
            position=position,
            dynamic_ncols=True,
            mininterval=0,
            miniters=1,
            smoothing=0.3,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{postfix}",
        )

    def _postfix(self, trainer: Any) -> dict[str, str]:
        return {k: f"{v:.4g}" for k, v in trainer.progress_bar_metrics.items()}

    # training ---------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = self._make(f"Epoch {trainer.current_epoch}", trainer.num_training_batches, leave=self.leave)
        self._done = 0
        self._next = time.monotonic() + self.interval

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._refresh(trainer, batch_idx + 1)

    def _refresh(self, trainer: Any, done: int) -> None:
        bar = self._bar
        if bar is None:
            return
        bar.update(done - self._done)
        self._done = done
        if not bar.disable:
            bar.set_postfix(self._postfix(trainer), refresh=True)

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if self._bar is not None:
            total = self._bar.total if self._bar.total is not None else self._done
            self._refresh(trainer, max(total, self._done))

    def on_train_end(self, trainer: Any, module: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # evaluation --------------------------------------------------------------------------
    def _eval_start(self, trainer: Any, desc: str) -> None:
        training = self._bar is not None
        self._eval_bar = self._make(desc, trainer.eval_total_batches, position=1 if training else 0, leave=not training)
        self._eval_done = 0
        self._eval_next = time.monotonic() + self.interval

    def _eval_batch_end(self) -> None:
        self._eval_done += 1
        now = time.monotonic()
        if now >= self._eval_next and self._eval_bar is not None:
            self._eval_next = now + self.interval
            self._eval_bar.update(self._eval_done - self._eval_bar.n)

    def _eval_end(self) -> None:
        if self._eval_bar is not None:
            self._eval_bar.update(self._eval_done - self._eval_bar.n)
            self._eval_bar.close()
            self._eval_bar = None

    def on_validation_start(self, trainer: Any, module: Any) -> None:
        self._eval_start(trainer, "Sanity check" if trainer.sanity_checking else "Validation")

    def on_validation_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end()

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        self._eval_end()
        if self._bar is not None and not self._bar.disable:
            self._bar.set_postfix(self._postfix(trainer), refresh=True)

    def on_test_start(self, trainer: Any, module: Any) -> None:
        self._eval_start(trainer, "Testing")

    def on_test_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end()

    def on_test_end(self, trainer: Any, module: Any) -> None:
        self._eval_end()

    def on_predict_start(self, trainer: Any, module: Any) -> None:
        self._eval_start(trainer, "Predicting")

    def on_predict_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end()

    def on_predict_end(self, trainer: Any, module: Any) -> None:
        self._eval_end()

    def on_exception(self, trainer: Any, module: Any, exception: BaseException) -> None:
        for bar in (self._eval_bar, self._bar):
            if bar is not None:
                bar.close()
        self._bar = self._eval_bar = None


TQDMProgressBar = ProgressBar
