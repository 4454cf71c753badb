"""Progress on the console: a tqdm bar on a terminal that redraws on a clock (10 Hz by default),
never once per step, and on anything else (a log file, CI) a plain line now and then."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ember.callbacks.callback import Callback
from ember.engine.events import Priority


def _is_terminal(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


class ProgressBar(Callback):
    """Shows training/validation/test/predict progress with the values logged with ``prog_bar=True``.

    On a terminal (or with ``force=True``): one training bar, redrawn for each epoch as Lightning's
    ``TQDMProgressBar`` does (``leave=True`` keeps a finished bar per epoch instead), and a
    validation/test/predict bar below it that disappears when done. Per step it costs one clock
    read; the bar and its values (one host transfer) are refreshed at most ``refresh_rate_hz``
    times a second.

    Anywhere else (output redirected to a file, CI logs), where a redrawn bar would become a flood of
    lines: no bar, but one plain line at the end of an epoch when ``line_interval_s`` seconds or more
    have passed since the last one (and, if any was written, one for the last epoch), so a short run
    stays silent and a long one shows a heartbeat. ``file`` defaults to stderr; only rank zero writes.
    """

    priority = Priority.LOGGER

    def __init__(
        self,
        refresh_rate_hz: float = 10.0,
        file: TextIO | None = None,
        force: bool = False,
        leave: bool = False,
        line_interval_s: float = 30.0,
    ):
        if not isinstance(refresh_rate_hz, (int, float)) or isinstance(refresh_rate_hz, bool) or refresh_rate_hz <= 0:
            raise ValueError(f"refresh_rate_hz must be a positive number, got {refresh_rate_hz!r}")
        if not isinstance(line_interval_s, (int, float)) or isinstance(line_interval_s, bool) or line_interval_s < 0:
            raise ValueError(f"line_interval_s must be a number of seconds >= 0, got {line_interval_s!r}")
        self.interval = 1.0 / refresh_rate_hz
        self.file = file
        self.force = force
        self.leave = leave
        self.line_interval_s = float(line_interval_s)
        self._bar: Any = None
        self._eval_bar: Any = None
        self._next = 0.0
        self._done = 0
        self._mode = "bar"  # "bar" (a terminal), "lines" (anything else) or "off" (not rank zero)
        self._last_line = 0.0
        self._unreported_epoch: int | None = None
        self._lines = 0

    @property
    def _out(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if not trainer.is_global_zero:  # distributed: only rank zero shows progress
            self._mode = "off"
        else:
            self._mode = "bar" if self.force or _is_terminal(self._out) else "lines"

    def _make(self, desc: str, total: int | None, position: int = 0, leave: bool = True) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            desc=desc,
            total=total,
            file=self._out,
            disable=False,
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
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_line = time.monotonic()
        self._unreported_epoch = None
        self._lines = 0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._done = 0
        if self._mode != "bar":
            return
        desc, total = f"Epoch {trainer.current_epoch}", trainer.num_training_batches
        if self.leave or self._bar is None:  # leave: a new bar per epoch, the finished ones stay
            if self._bar is not None:
                self._bar.close()
            self._bar = self._make(desc, total, leave=True)
        else:  # one bar, redrawn from zero for each epoch
            self._bar.reset(total=total)
            self._bar.set_description(desc, refresh=False)
        self._next = time.monotonic() + self.interval

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._bar is None:
            return
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
        bar.set_postfix(self._postfix(trainer), refresh=True)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._bar is not None:
            total = self._bar.total if self._bar.total is not None else self._done
            self._refresh(trainer, max(total, self._done))
        elif self._mode == "lines":
            now = time.monotonic()
            if now - self._last_line >= self.line_interval_s:
                self._write_line(trainer, trainer.current_epoch, now)
            else:
                self._unreported_epoch = trainer.current_epoch

    def _write_line(self, trainer: Any, epoch: int, now: float) -> None:
        values = "".join(f", {k}={v}" for k, v in self._postfix(trainer).items())
        batches = trainer.num_training_batches
        print(f"Epoch {epoch}: {batches if batches is not None else '?'} batches{values}", file=self._out, flush=True)
        self._last_line, self._unreported_epoch = now, None
        self._lines += 1

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._mode == "lines" and self._lines and self._unreported_epoch is not None:
            self._write_line(trainer, self._unreported_epoch, time.monotonic())

    # evaluation --------------------------------------------------------------------------
    def _eval_start(self, trainer: Any, desc: str) -> None:
        self._eval_done = 0
        if self._mode != "bar":
            return
        training = self._bar is not None
        self._eval_bar = self._make(desc, trainer.eval_total_batches, position=1 if training else 0, leave=not training)
        self._eval_next = time.monotonic() + self.interval

    def _eval_batch_end(self) -> None:
        if self._eval_bar is None:
            return
        self._eval_done += 1
        now = time.monotonic()
        if now >= self._eval_next:
            self._eval_next = now + self.interval
            self._eval_bar.update(self._eval_done - self._eval_bar.n)

    def _eval_end(self) -> None:
        if self._eval_bar is not None:
            self._eval_bar.update(self._eval_done - self._eval_bar.n)
            self._eval_bar.close()
            self._eval_bar = None

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start(trainer, "Sanity check" if trainer.sanity_checking else "Validation")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._eval_end()
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(trainer), refresh=True)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start(trainer, "Testing")

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end()

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._eval_end()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start(trainer, "Predicting")

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end()

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._eval_end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        for bar in (self._eval_bar, self._bar):
            if bar is not None:
                bar.close()
        self._bar = self._eval_bar = None


TQDMProgressBar = ProgressBar
