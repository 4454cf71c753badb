"""Validation scheduling, Lightning against Ember: how many validation runs, after which batches,
and where ModelCheckpoint/EarlyStopping act."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module


def validation_points(fw: Framework, tmp_path: Any, n_train: int = 64, **options: Any) -> list[tuple[int, int]]:
    """(epoch, global_step) at each validation run during fit."""
    points: list[tuple[int, int]] = []

    class Spy(fw.Callback):
        def on_validation_start(self, trainer, pl_module):
            if not trainer.sanity_checking:
                points.append((trainer.current_epoch, trainer.global_step))

    torch.manual_seed(0)
    trainer = fw.trainer(tmp_path / fw.name, callbacks=[Spy()], num_sanity_val_steps=0, **options)
    quiet_fit(trainer, regression_module(fw)(), data(n_train, batch_size=1), data(4, batch_size=2))
    return points


@pytest.mark.parametrize(
    "options",
    [
        dict(max_epochs=2, val_check_interval=1 / 3),
        dict(max_epochs=2, val_check_interval=0.25),
        dict(max_epochs=2, val_check_interval=1.0),
        dict(max_epochs=2, val_check_interval=16),
        dict(max_epochs=2, val_check_interval=20),
        dict(max_epochs=3, check_val_every_n_epoch=2),
        dict(max_epochs=3, check_val_every_n_epoch=2, val_check_interval=0.5),
        dict(max_epochs=3, check_val_every_n_epoch=None, val_check_interval=40),
        dict(max_steps=70, val_check_interval=30),
        dict(max_epochs=2, accumulate_grad_batches=4, val_check_interval=0.5),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_validation_runs_at_the_same_points(tmp_path, options):
    expected = validation_points(LIGHTNING, tmp_path, **options)
    assert validation_points(EMBER, tmp_path, **options) == expected


def test_val_check_interval_longer_than_the_epoch_is_an_error(tmp_path):
    for fw in BOTH:
        with pytest.raises(Exception, match="val_check_interval"):
            validation_points(fw, tmp_path, n_train=8, max_epochs=1, val_check_interval=20)


def test_float_val_check_interval_with_check_val_every_n_epoch_none_is_an_error(tmp_path):
    for fw in BOTH:
        with pytest.raises(Exception, match="val_check_interval"):
            validation_points(fw, tmp_path, n_train=8, max_epochs=1, check_val_every_n_epoch=None, val_check_interval=0.5)


def monitors_log(fw: Framework, tmp_path: Any, **options: Any) -> tuple[list[str], list]:
    ckpt = fw.ModelCheckpoint(dirpath=str(tmp_path / fw.name / "ckpts"), monitor="val_loss", save_top_k=-1)
    stopped: list = []

    class Early(fw.EarlyStopping):
        def on_train_end(self, trainer, pl_module):
            stopped.append((trainer.current_epoch, trainer.global_step))

    early = Early(monitor="val_loss", patience=100)
    torch.manual_seed(0)
    trainer = fw.trainer(tmp_path / fw.name, callbacks=[ckpt, early], num_sanity_val_steps=0, enable_checkpointing=True, **options)
    quiet_fit(trainer, regression_module(fw)(), data(16, batch_size=4), data(4, batch_size=2))
    names = sorted(p.name for p in (tmp_path / fw.name / "ckpts").iterdir())
    return names, stopped


@pytest.mark.parametrize(
    "options",
    [dict(max_epochs=4, check_val_every_n_epoch=2), dict(max_epochs=2, val_check_interval=0.5), dict(max_epochs=2)],
    ids=["every-2-epochs", "twice-an-epoch", "default"],
)
def test_monitors_act_only_after_a_validation_run(tmp_path, options):
    expected = monitors_log(LIGHTNING, tmp_path, **options)
    assert monitors_log(EMBER, tmp_path, **options) == expected
