"""``ckpt_path="last"`` looks only where this run's own checkpoints go, and every load says which
file it read (issue 13, item 2; issue 14, item 3)."""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callbacks"))
from scripted import Scripted, data, trainer

from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import CheckpointError, load_checkpoint
from ember.loggers import CSVLogger

VALUES = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0, 7.0, 8.0]


def loaded_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("ember: loaded checkpoint")]


def strangers_checkpoint(tmp_path: Path, where: Path) -> Path:
    """Another experiment's valid checkpoint (5 epochs, another learning rate), copied to ``where``
    and made newer than anything of this run."""
    other = ModelCheckpoint(dirpath=tmp_path / "other-experiment", save_top_k=1)
    trainer(tmp_path / "other-root", callbacks=[other], max_epochs=5).fit(Scripted(VALUES, lr=0.5), data(), data())
    where.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(other.best_model_path, where)
    future = os.stat(where).st_mtime + 3600
    os.utime(where, (future, future))
    return where


@pytest.mark.parametrize("with_logger", [False, True], ids=["no-logger", "logger-version-folder"])
def test_last_ignores_a_strangers_newer_checkpoint(tmp_path: Path, capsys: Any, with_logger: bool) -> None:
    root = tmp_path / "root"

    def make(max_epochs: int) -> Any:
        # dirpath=None: the run's checkpoints go to <log_dir>/checkpoints
        logger = CSVLogger(root, version="exp") if with_logger else False
        return trainer(root, max_epochs=max_epochs, logger=logger)

    first = make(1)
    first.fit(Scripted(VALUES), data(), data())
    own = Path(first.checkpoint_callback.best_model_path)
    expected_dir = root / "ember_logs" / "exp" / "checkpoints" if with_logger else root / "checkpoints"
    assert own.parent == expected_dir and own.name == "epoch=0-step=4.ckpt"
    stranger = strangers_checkpoint(tmp_path, root / "downloads" / "x" / "model.ckpt")
    assert load_checkpoint(stranger)["global_step"] == 20
    capsys.readouterr()

    resumed = make(2)
    resumed.fit(Scripted(VALUES), data(), data(), ckpt_path="last")
    assert resumed.global_step == 8  # epoch 0 of this run, then epoch 1: not the stranger's 20 steps
    assert loaded_lines(capsys.readouterr().out) == [f"ember: loaded checkpoint {str(own)!r} (epoch 0, global_step 4)"]
    assert stranger.exists()


def test_every_load_names_the_file(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="val_loss", save_top_k=1)
    tr = trainer(tmp_path, callbacks=[cb], max_epochs=2)
    tr.fit(Scripted(VALUES), data(), data())
    capsys.readouterr()
    tr.validate(dataloaders=data(), ckpt_path="best", verbose=False)
    best = str(tmp_path / "c" / "epoch=1-step=8.ckpt")
    assert loaded_lines(capsys.readouterr().out) == [f"ember: loaded checkpoint {best!r} (epoch 1, global_step 8)"]
    monkeypatch.chdir(tmp_path)  # a relative path is shown resolved
    trainer(tmp_path, max_epochs=3).fit(Scripted(VALUES), data(), data(), ckpt_path=os.path.join("c", "epoch=1-step=8.ckpt"))
    assert loaded_lines(capsys.readouterr().out) == [f"ember: loaded checkpoint {best!r} (epoch 1, global_step 8)"]


class Evaluated(Scripted):
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_last_with_no_checkpoint_is_an_error_outside_fit(tmp_path: Path, stage: str) -> None:
    """Evaluating with ckpt_path="last" and nothing there would silently evaluate an untrained model."""
    (tmp_path / "elsewhere").mkdir()
    strangers_checkpoint(tmp_path, tmp_path / "root" / "elsewhere" / "x.ckpt")  # not this trainer's
    tr = trainer(tmp_path / "root", max_epochs=1)
    model = Evaluated(VALUES)
    with pytest.raises(CheckpointError, match=r'ckpt_path="last".*no checkpoint found in .*checkpoints'):
        getattr(tr, stage)(model, data(), ckpt_path="last")


def test_fit_with_last_and_no_checkpoint_starts_fresh_with_a_warning(tmp_path: Path) -> None:
    strangers_checkpoint(tmp_path, tmp_path / "root" / "old" / "x.ckpt")
    tr = trainer(tmp_path / "root", max_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit(Scripted(VALUES), data(), data(), ckpt_path="last")
    assert tr.global_step == 4
    assert any("no checkpoint found in" in str(w.message) and "starting from scratch" in str(w.message) for w in caught)
