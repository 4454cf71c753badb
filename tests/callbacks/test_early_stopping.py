"""``EarlyStopping``: patience, min_delta, mode, thresholds, non-finite values, a monitor that was
never logged, and its state in checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from scripted import Scripted, data, trainer

from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import load_checkpoint


def run(
    tmp_path: Path, values: list[float], stopper: EarlyStopping, max_epochs: int | None = None, **kwargs: Any
) -> Any:
    tr = trainer(
        tmp_path, callbacks=[stopper], max_epochs=max_epochs or len(values), enable_checkpointing=False, **kwargs
    )
    tr.fit(Scripted(values), data(), data())
    return tr


def test_patience_counts_checks_without_improvement(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_loss", patience=2)
    tr = run(tmp_path, [5.0, 4.0, 4.5, 4.0, 3.0, 2.0], es)  # 4.0 again is no improvement
    assert es.stopped_epoch == 3 and tr.current_epoch == 4 and tr.global_step == 16
    assert float(es.best_score) == 4.0 and es.wait_count == 2
    assert es.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert "did not improve in the last 2 records" in es.stopping_reason_message


def test_an_improvement_resets_the_wait(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_loss", patience=2)
    tr = run(tmp_path, [5.0, 6.0, 4.0, 6.0, 3.0, 7.0, 8.0, 1.0], es)
    assert es.stopped_epoch == 6 and tr.current_epoch == 7


def test_min_delta(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.1)
    run(tmp_path, [5.0, 4.95, 4.85, 4.8, 4.78, 1.0], es)  # only 4.85 (< 5.0 - 0.1) counts as an improvement
    assert es.stopped_epoch == 4 and float(es.best_score) == pytest.approx(4.85)
    es = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.1)
    run(tmp_path, [5.0, 4.95, 4.91, 1.0], es)
    assert es.stopped_epoch == 2 and float(es.best_score) == 5.0


def test_mode_max(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_acc", mode="max", patience=2)
    run(tmp_path, [-1.0, -2.0, -3.0, -2.5, -2.9, -9.0], es)  # val_acc = 1, 2, 3, 2.5, 2.9, 9
    assert es.stopped_epoch == 4 and float(es.best_score) == 3.0


def test_stopping_threshold(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_loss", patience=100, stopping_threshold=2.0)
    tr = run(tmp_path, [5.0, 2.0, 1.5, 1.0], es)  # as Lightning: reaching it means passing it (2.0 does not)
    assert es.stopped_epoch == 2 and tr.current_epoch == 3
    assert es.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD
    assert "Stopping threshold reached: val_loss = 1.5 < 2.0" in es.stopping_reason_message


def test_divergence_threshold(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_loss", patience=100, divergence_threshold=10.0)
    run(tmp_path, [5.0, 9.0, 11.0, 1.0], es)
    assert es.stopped_epoch == 2 and "Divergence threshold reached" in es.stopping_reason_message
    assert es.stopping_reason is EarlyStoppingReason.DIVERGENCE_THRESHOLD
    es = EarlyStopping(monitor="val_acc", mode="max", patience=100, divergence_threshold=-10.0)
    run(tmp_path, [5.0, 9.0, 11.0, 1.0], es)  # val_acc -11 < -10
    assert es.stopped_epoch == 2


def test_check_finite(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_loss", patience=100)
    tr = run(tmp_path, [5.0, math.nan, 1.0], es)
    assert es.stopped_epoch == 1 and tr.current_epoch == 2 and "not finite" in es.stopping_reason_message
    assert es.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC
    es = EarlyStopping(monitor="val_loss", patience=100, check_finite=False)
    tr = run(tmp_path, [5.0, math.inf, 1.0], es)
    assert tr.current_epoch == 3 and float(es.best_score) == 1.0


def test_a_monitor_never_logged_lists_the_logged_names(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="`val_lss` which is not available") as err:  # Lightning's type
        run(tmp_path, [1.0, 2.0], EarlyStopping(monitor="val_lss"))
    for name in ("val_loss", "val_acc", "train_loss", "strict=False"):
        assert name in str(err.value)


def test_strict_false_skips_the_check(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_lss", strict=False, patience=1)
    tr = run(tmp_path, [1.0, 2.0, 3.0], es)
    assert tr.current_epoch == 3 and es.wait_count == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(monitor="x", mode="low")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(monitor="x", patience=-1)
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping(monitor="")


def test_state_is_checkpointed_and_restored(tmp_path: Path) -> None:
    class Crash(Callback):  # after epoch 2's checkpoint (ModelCheckpoint acts last in on_train_epoch_end)
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            if trainer.current_epoch == 3:
                raise RuntimeError("crash")

    values = [5.0, 4.0, 4.5, 4.6, 4.7, 1.0]
    es = EarlyStopping(monitor="val_loss", patience=3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    with pytest.raises(RuntimeError):
        trainer(tmp_path, callbacks=[es, ckpt, Crash()], max_epochs=6).fit(Scripted(values), data(), data())
    saved = next(
        v for k, v in load_checkpoint(tmp_path / "c" / "last.ckpt")["callbacks"].items() if k.startswith("Early")
    )
    assert saved["wait_count"] == 1 and saved["best_score"] == 4.0  # epoch 2's check is in the checkpoint
    es = EarlyStopping(monitor="val_loss", patience=3)
    tr = trainer(tmp_path, callbacks=[es, ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)], max_epochs=6)
    tr.fit(Scripted(values), data(), data(), ckpt_path="last")
    assert es.stopped_epoch == 4 and tr.current_epoch == 5  # the same epoch as without the crash
    assert float(es.best_score) == 4.0 and es.wait_count == 3
    assert isinstance(es.best_score, torch.Tensor)
