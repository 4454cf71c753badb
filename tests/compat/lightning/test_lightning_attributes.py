"""Trainer and Module attributes and Trainer arguments, Lightning against Ember."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module
from test_lightning_hooks import fit_log
from torch import nn


def observed_attributes(fw: Framework, tmp_path: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class Look(fw.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0 and trainer.current_epoch == 0:
                seen["fit"] = (
                    str(trainer.state.fn),
                    str(trainer.state.stage),
                    str(trainer.state.status),
                    trainer.training,
                    trainer.validating,
                    trainer.num_training_batches,
                    list(trainer.num_val_batches),
                    trainer.estimated_stepping_batches,
                    trainer.limit_train_batches,
                    type(trainer.train_dataloader).__name__,
                    type(trainer.val_dataloaders).__name__,
                    pl_module.global_rank,
                    pl_module.local_rank,
                    pl_module.logger is None,
                    len(pl_module.loggers),
                )

        def on_validation_start(self, trainer, pl_module):
            seen.setdefault("validating", (str(trainer.state.stage), trainer.validating, trainer.sanity_checking))

        def on_test_start(self, trainer, pl_module):
            seen["test"] = (str(trainer.state.fn), str(trainer.state.stage), trainer.testing, list(trainer.num_test_batches))

    trainer = fw.trainer(tmp_path / fw.name, max_epochs=2, accumulate_grad_batches=2, limit_train_batches=6, callbacks=[Look()])
    module = regression_module(fw)()
    seen["before"] = (module.current_epoch, module.global_step, module.global_rank)
    quiet_fit(trainer, module, data(64), data(16))
    seen["after fit"] = (str(trainer.state.fn), trainer.state.stage, str(trainer.state.status), trainer.state.finished)
    trainer.test(module, data(24), verbose=False)
    seen["lists"] = (
        len(trainer.checkpoint_callbacks),
        len(trainer.early_stopping_callbacks),
        trainer.progress_bar_callback is None,
    )
    return seen


def test_trainer_and_module_attributes_match(tmp_path):
    expected = observed_attributes(LIGHTNING, tmp_path)
    assert observed_attributes(EMBER, tmp_path) == expected


def test_save_hyperparameters_in_a_base_class_records_the_subclass_arguments():
    got = {}
    for fw in BOTH:

        class Base(fw.Module):
            def __init__(self, width: int = 4, **kwargs: Any) -> None:
                super().__init__()
                self.save_hyperparameters()
                self.layer = nn.Linear(width, 1)

        class Sub(Base):
            def __init__(self, depth: int = 3, name: str = "sub", width: int = 8) -> None:
                super().__init__(width=width)

        class FromNamespace(fw.Module):
            def __init__(self, args: argparse.Namespace) -> None:
                super().__init__()
                self.save_hyperparameters(args)

        got[fw.name] = (
            dict(Sub(depth=5).hparams),
            dict(Base(width=2).hparams),
            dict(FromNamespace(argparse.Namespace(lr=0.1, layers=2)).hparams),
        )
    assert got["ember"] == got["lightning"]


def test_a_frozen_submodule_stays_in_eval_mode_across_validation(tmp_path):
    modes: dict[str, list] = {}
    for fw in BOTH:
        seen: list = []

        class Frozen(regression_module(fw)):
            def __init__(self) -> None:
                super().__init__()
                self.frozen = nn.Dropout(0.5)

            def on_fit_start(self) -> None:
                self.frozen.eval()

            def training_step(self, batch, batch_idx, seen=seen):
                seen.append((self.training, self.frozen.training))
                return super().training_step(batch, batch_idx)

        quiet_fit(fw.trainer(tmp_path / fw.name, max_epochs=2, num_sanity_val_steps=1), Frozen(), data(16), data(8))
        modes[fw.name] = seen
    assert modes["ember"] == modes["lightning"]
    assert all(not frozen for _, frozen in modes["ember"])


def test_a_val_loader_without_validation_step_is_skipped_with_a_warning(tmp_path):
    for fw in BOTH:

        class NoVal(regression_module(fw)):
            validation_step = None  # type: ignore[assignment]

        class Plain(nn.Module):  # no validation_step at all
            def __init__(self) -> None:
                super().__init__()
                self.layer = nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return torch.nn.functional.mse_loss(self.layer(x), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        with pytest.warns(UserWarning, match="validation_step"):
            trainer.fit(NoVal(), data(16), data(8))
        assert trainer.global_step == 2
        if fw is EMBER:  # Lightning rejects a plain nn.Module outright (it checks the class): Ember takes it
            ember_trainer = fw.trainer(tmp_path / "plain", max_epochs=1)
            ember_trainer.fit(Plain(), data(16))
            assert ember_trainer.global_step == 2


@pytest.mark.parametrize(
    "options",
    [
        dict(max_epochs=0, num_sanity_val_steps=1),
        dict(fast_dev_run=2),
        dict(max_epochs=2, limit_train_batches=None, limit_val_batches=None),
    ],
    ids=["max_epochs=0", "fast_dev_run=2", "limits-None"],
)
def test_trainer_arguments_give_the_same_hook_sequences(tmp_path, options):
    expected = fit_log(LIGHTNING, tmp_path, **options)
    assert fit_log(EMBER, tmp_path, **options) == expected


def test_fast_dev_run_keeps_a_model_checkpoint_idle(tmp_path):
    for fw in BOTH:
        ckpt = fw.ModelCheckpoint(dirpath=str(tmp_path / fw.name / "ckpts"))
        trainer = fw.trainer(tmp_path / fw.name, fast_dev_run=True, enable_checkpointing=True, callbacks=[ckpt])
        quiet_fit(trainer, regression_module(fw)(), data(16), data(8))
        assert trainer.global_step == 1
        assert not (tmp_path / fw.name / "ckpts").exists()


def test_max_epochs_minus_one_and_deterministic_warn(tmp_path):
    ends = {}
    for fw in BOTH:
        trainer = fw.trainer(tmp_path / fw.name, max_epochs=-1, max_steps=5, deterministic="warn")
        try:
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            quiet_fit(trainer, regression_module(fw)(), data(16))
            ends[fw.name] = (trainer.global_step, trainer.current_epoch)
        finally:
            torch.use_deterministic_algorithms(False)
    assert ends["ember"] == ends["lightning"] == (5, 3)  # the epoch cut short by max_steps counts
