"""``ModelCheckpoint``: a step-triggered save that waits for the validation logging its monitor,
across a resume, and a missing monitor before and after validation (tests/compat/lightning/
test_lightning_checkpoint_defer.py compares all of this with Lightning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from scripted import Scripted, data, trainer

from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint

VALUES = [5.0, 3.0, 4.0, 1.0]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


class CrashAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


def callbacks(tmp_path: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """Saves every 5 steps by val_loss (only validation logs it), and every 6 steps without a monitor."""
    by_val = ModelCheckpoint(dirpath=tmp_path / "val", every_n_train_steps=5, monitor="val_loss", save_top_k=-1)
    return by_val, ModelCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=6, save_top_k=-1)


def test_a_deferred_save_is_made_after_the_next_validation(tmp_path: Path) -> None:
    by_val, by_step = callbacks(tmp_path)
    # 4 steps an epoch, validation at the end of epoch 1 (step 8): the save due at step 5 waits for it
    trainer(tmp_path, callbacks=[by_val, by_step], max_epochs=2, check_val_every_n_epoch=2).fit(
        Scripted(VALUES), data(), data()
    )
    assert names(tmp_path / "val") == ["epoch=1-step=8.ckpt"]
    assert by_val.best_model_score == torch.tensor(3.0)


def test_a_deferred_save_survives_a_resume(tmp_path: Path) -> None:
    """Killed at step 7 (after step 6's checkpoint, which holds the save deferred at step 5) and
    resumed from it: the save is made after validation at step 8, as in the run never interrupted."""
    by_val, by_step = callbacks(tmp_path)
    with pytest.raises(RuntimeError, match="crash"):
        trainer(tmp_path, callbacks=[by_val, by_step, CrashAtStep(7)], max_epochs=2, check_val_every_n_epoch=2).fit(
            Scripted(VALUES), data(), data()
        )
    assert names(tmp_path / "val") == [] and names(tmp_path / "steps") == ["epoch=1-step=6.ckpt"]
    state = torch.load(tmp_path / "steps" / "epoch=1-step=6.ckpt", weights_only=True)["callbacks"]
    assert state[by_val.state_key]["deferred"] is True
    by_val, by_step = callbacks(tmp_path)
    trainer(tmp_path, callbacks=[by_val, by_step], max_epochs=2, check_val_every_n_epoch=2).fit(
        Scripted(VALUES), data(), data(), ckpt_path=str(tmp_path / "steps" / "epoch=1-step=6.ckpt")
    )
    assert names(tmp_path / "val") == ["epoch=1-step=8.ckpt"]


def test_a_missing_monitor_is_a_warning_before_validation_ran(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_loss", save_last=True)
    with pytest.warns(UserWarning, match=r"monitor='val_loss'.*train_loss"):
        trainer(tmp_path, callbacks=[cb], max_epochs=2).fit(Scripted(VALUES), data())  # no validation data
    assert names(tmp_path / "c") == ["last.ckpt"] and cb.best_model_path == "" and cb.best_model_score is None


def test_a_missing_monitor_is_an_error_once_validation_ran(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_los", every_n_train_steps=2)
    with pytest.raises(ValueError, match=r"monitor='val_los'.*val_loss"):
        trainer(tmp_path, callbacks=[cb], max_epochs=2, val_check_interval=0.5).fit(Scripted(VALUES), data(), data())
    assert names(tmp_path / "c") == []


def test_save_top_k_0_never_looks_at_the_monitor(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_los", save_top_k=0, save_last=True)
    trainer(tmp_path, callbacks=[cb], max_epochs=2).fit(Scripted(VALUES), data(), data())
    assert names(tmp_path / "c") == ["last.ckpt"]
