"""At the end of ``fit``, one console line (rank zero) says why it stopped, the best checkpoint and
its score when a ModelCheckpoint monitors, and where the logs are (issue 14, item 3)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callbacks"))
from scripted import Scripted, data, trainer

from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.loggers import CSVLogger

VALUES = [5.0, 3.0, 4.0, 6.0, 7.0, 8.0]


def end_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("ember: fit stopped:")]


def test_max_epochs_best_checkpoint_and_log_folder(tmp_path: Path, capsys: Any) -> None:
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=1)
    tr = trainer(tmp_path, max_epochs=3, callbacks=[cb], logger=CSVLogger(tmp_path))
    tr.fit(Scripted(VALUES), data(), data())
    best = tmp_path / "ember_logs" / "version_0" / "checkpoints" / "epoch=1-step=8.ckpt"
    log_dir = tmp_path / "ember_logs" / "version_0"
    assert end_lines(capsys.readouterr().out) == [
        f"ember: fit stopped: max_epochs=3 reached; best checkpoint {str(best)!r} (val_loss=3); logs in {str(log_dir)!r}"
    ]


def test_max_steps_without_a_monitor_or_a_logger(tmp_path: Path, capsys: Any) -> None:
    tr = trainer(tmp_path, max_epochs=10, max_steps=6)  # the default ModelCheckpoint monitors nothing
    tr.fit(Scripted(VALUES), data(), data())
    assert end_lines(capsys.readouterr().out) == ["ember: fit stopped: max_steps=6 reached"]


def test_early_stopping_says_why(tmp_path: Path, capsys: Any) -> None:
    stopper = EarlyStopping(monitor="val_loss", patience=2)
    trainer(tmp_path, max_epochs=6, callbacks=[stopper], enable_checkpointing=False).fit(Scripted(VALUES), data(), data())
    (line,) = end_lines(capsys.readouterr().out)
    assert line == f"ember: fit stopped: early stopping: {stopper.stopping_reason_message}"
    assert "val_loss" in line and stopper.stopped_epoch == 3


def test_should_stop_from_a_callback(tmp_path: Path, capsys: Any) -> None:
    class Stop(Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            trainer.should_stop = True

    trainer(tmp_path, max_epochs=6, callbacks=[Stop()]).fit(Scripted(VALUES), data(), data())
    assert end_lines(capsys.readouterr().out) == ["ember: fit stopped: trainer.should_stop was set"]


class Slow(Scripted):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        time.sleep(0.05)
        return super().training_step(batch, batch_idx)


def test_time_limit(tmp_path: Path, capsys: Any) -> None:
    tr = trainer(tmp_path, max_epochs=None, max_time={"seconds": 1}, limit_val_batches=0)
    tr.fit(Slow([1.0] * 1000), data(), data())  # runs until the limit, however long a step takes
    assert end_lines(capsys.readouterr().out) == ["ember: fit stopped: max_time=0:00:01 reached"]


def test_stop_signal(tmp_path: Path, capsys: Any) -> None:
    class Signal(Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(SystemExit):
        trainer(tmp_path, max_epochs=6, callbacks=[Signal()]).fit(Scripted(VALUES), data(), data())
    assert end_lines(capsys.readouterr().out) == ["ember: fit stopped: received SIGUSR1"]


def test_no_line_when_fit_fails(tmp_path: Path, capsys: Any) -> None:
    class Broken(Scripted):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path, max_epochs=2).fit(Broken(VALUES), data(), data())
    assert end_lines(capsys.readouterr().out) == []


def test_only_rank_zero_prints(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tr = trainer(tmp_path, max_epochs=1)
    monkeypatch.setattr(type(tr), "is_global_zero", property(lambda self: False))
    tr.fit(Scripted(VALUES), data(), data())
    assert end_lines(capsys.readouterr().out) == []
