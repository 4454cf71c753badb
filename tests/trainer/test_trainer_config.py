"""Bad configuration fails early, with a message naming the argument and the value; bad models
fail at the start of fit/validate/test/predict, before any step or hook runs."""

from __future__ import annotations

import datetime

import pytest
import torch
from torch import nn

import ember
from ember.callbacks import ModelSummary, ProgressBar
from helpers import HookModule, HookRecorder, LinearModel, loader, quiet_trainer


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_epochs": -2}, ValueError),
        ({"max_epochs": 1.5}, ValueError),
        ({"min_epochs": -1}, ValueError),
        ({"max_steps": 0}, ValueError),
        ({"max_steps": -5}, ValueError),
        ({"accumulate_grad_batches": 0}, ValueError),
        ({"accumulate_grad_batches": True}, ValueError),
        ({"precision": "17"}, ValueError),
        ({"limit_train_batches": 1.5}, ValueError),
        ({"limit_val_batches": -0.1}, ValueError),
        ({"limit_test_batches": -1}, ValueError),
        ({"limit_predict_batches": "all"}, TypeError),
        ({"val_check_interval": 0}, ValueError),
        ({"val_check_interval": 0.0}, ValueError),
        ({"val_check_interval": 1.5}, ValueError),
        ({"val_check_interval": "epoch"}, TypeError),
        ({"check_val_every_n_epoch": 0}, ValueError),
        ({"num_sanity_val_steps": -2}, ValueError),
        ({"log_every_n_steps": 0}, ValueError),
        ({"gradient_clip_val": -1.0}, ValueError),
        ({"gradient_clip_val": "big"}, ValueError),
        ({"gradient_clip_algorithm": "x"}, ValueError),
        ({"accelerator": "tpu"}, ValueError),
        ({"devices": 0}, ValueError),
        ({"devices": "two"}, ValueError),
        ({"strategy": "horovod"}, ValueError),
        ({"num_nodes": 0}, ValueError),
        ({"sync_batchnorm": 1}, TypeError),
        ({"use_distributed_sampler": "yes"}, TypeError),
        ({"fast_dev_run": -1}, ValueError),
        ({"max_time": "1 hour"}, ValueError),
        ({"max_time": 3600}, TypeError),
        ({"max_time": {"hours": -1}}, ValueError),
        ({"enable_progress_bar": "yes"}, TypeError),
        ({"deterministic": 1}, TypeError),
        ({"default_root_dir": 3}, TypeError),
        ({"logger": "csv"}, TypeError),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v.__name__,
)
def test_bad_trainer_arguments_fail_at_construction(tmp_path, kwargs, error):
    options = {"default_root_dir": tmp_path, **kwargs}
    with pytest.raises(error) as info:
        ember.Trainer(**options)
    ((name, value),) = kwargs.items()
    message = str(info.value)
    assert name in message
    shown = str(value) if name == "logger" else repr(value)
    assert shown in message, message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_epochs": -2}, "max_epochs=-2"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches=0"),
        ({"precision": "17"}, "precision='17'"),
        ({"limit_train_batches": 1.5}, "limit_train_batches=1.5"),
        ({"val_check_interval": 0}, "val_check_interval=0"),
        ({"gradient_clip_algorithm": "x"}, "gradient_clip_algorithm='x'"),
        ({"accelerator": "tpu"}, "accelerator='tpu'"),
        ({"devices": 0}, "devices=0"),
    ],
)
def test_messages_read_argument_equals_value(tmp_path, kwargs, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        ember.Trainer(default_root_dir=tmp_path, **kwargs)


def test_messages_say_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match="'norm' or 'value'"):
        ember.Trainer(gradient_clip_algorithm="x", default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'auto', 'cpu', 'gpu', 'cuda'"):
        ember.Trainer(accelerator="tpu", default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=">= 1"):
        ember.Trainer(accumulate_grad_batches=0, default_root_dir=tmp_path)


def test_max_epochs_none_needs_another_limit(tmp_path):
    with pytest.raises(ValueError, match="max_epochs=None"):
        ember.Trainer(max_epochs=None, default_root_dir=tmp_path)


def test_a_callback_class_instead_of_an_instance_is_rejected(tmp_path):
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        ember.Trainer(callbacks=[ProgressBar(), ModelSummary], default_root_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        ({"precision": 16}, lambda t: t.precision == "16-mixed"),
        ({"precision": "bf16"}, lambda t: t.precision == "bf16-mixed"),
        ({"precision": 64}, lambda t: t.precision == "64-true"),
        ({"precision": "32"}, lambda t: t.precision == "32-true"),
        ({"accelerator": "cpu", "devices": 1}, lambda t: t.root_device == torch.device("cpu")),
        ({"accelerator": "cpu", "devices": "auto"}, lambda t: t.root_device.type == "cpu"),
        ({"max_steps": -1}, lambda t: t.max_steps is None),
        ({"max_time": "00:01:00:00"}, lambda t: t.max_time == 3600.0),
        ({"max_time": datetime.timedelta(minutes=2)}, lambda t: t.max_time == 120.0),
        ({"max_time": {"seconds": 30}}, lambda t: t.max_time == 30.0),
        ({"gradient_clip_val": 0}, lambda t: t.gradient_clip_val is None),
        ({"limit_val_batches": 0}, lambda t: t.limits["validate"] == 0),
        ({"strategy": "single_device"}, lambda t: t.world_size == 1 and t.global_rank == 0 and t.is_global_zero),
    ],
)
def test_good_arguments_are_normalised(tmp_path, kwargs, check):
    assert check(ember.Trainer(default_root_dir=tmp_path, **kwargs))


def test_default_callbacks(tmp_path):
    trainer = ember.Trainer(default_root_dir=tmp_path)
    shown = (ProgressBar, ModelSummary)
    assert [type(c) for c in trainer.callbacks if type(c) in shown] == [ProgressBar, ModelSummary]
    bare = ember.Trainer(
        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
    )
    assert bare.callbacks == []
    mine = ProgressBar(refresh_rate_hz=2)
    assert ember.Trainer(default_root_dir=tmp_path, callbacks=mine).callbacks[0] is mine


# ---------------------------------------------------------------------- bad models


class NoTrainingStep(ember.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NoOptimizers(ember.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        raise AssertionError("must not run")


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (NoTrainingStep(), "training_step"),
        (NoOptimizers(), "configure_optimizers"),
        (object(), "torch.nn.Module"),
        (lambda batch: batch, "torch.nn.Module"),
        (nn.Linear(3, 1), "training_step"),
    ],
    ids=["no-training-step", "no-configure-optimizers", "object", "function", "plain-linear"],
)
def test_unusable_models_fail_at_fit_start_before_any_hook(tmp_path, model, match):
    log: list = []
    trainer = quiet_trainer(tmp_path, callbacks=[HookRecorder(log, "cb")])
    with pytest.raises(TypeError, match=match):
        trainer.fit(model, loader(16))
    assert log == []  # not even setup ran


@pytest.mark.parametrize(("method", "match"), [("validate", "validation_step"), ("test", "test_step")])
def test_eval_without_its_step_fails_before_any_hook(tmp_path, method, match):
    log: list = []

    class TrainOnly(ember.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

    trainer = quiet_trainer(tmp_path, callbacks=[HookRecorder(log, "cb")])
    with pytest.raises(TypeError, match=match):
        getattr(trainer, method)(TrainOnly(), loader(16))
    assert log == []


def test_validate_without_a_model_before_fit_raises(tmp_path):
    with pytest.raises(TypeError, match="model"):  # Lightning's TypeError
        quiet_trainer(tmp_path).validate(dataloaders=loader(16))


def test_validate_after_fit_reuses_the_fitted_model(tmp_path):
    log: list = []
    model = HookModule(log)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader(16))
    log.clear()
    trainer.validate(dataloaders=loader(16), verbose=False)
    assert ("module", "validation_step") in log
    assert trainer.model is model and trainer.lightning_module is model


def test_datamodule_and_loaders_together_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        quiet_trainer(tmp_path).fit(LinearModel(), loader(16), datamodule=ember.DataModule())


def test_several_training_loaders_are_combined(tmp_path):
    # as Lightning: a list of training loaders is a CombinedLoader in max_size_cycle mode (a list per batch)
    batches = []

    class Model(LinearModel):
        def training_step(self, batch, batch_idx):
            batches.append(len(batch))
            return super().training_step(batch[0], batch_idx)

    quiet_trainer(tmp_path, max_epochs=1).fit(Model(), [loader(16), loader(32)])
    assert batches == [2] * 4  # the longer loader (32 samples in batches of 8) decides the epoch


def test_non_iterable_val_loader_is_rejected(tmp_path):
    model = LinearModel()
    with pytest.raises(TypeError, match="val_dataloaders"):
        quiet_trainer(tmp_path).fit(model, loader(16), 42)
    assert model.training_step_calls == 0


def test_test_needs_data(tmp_path):
    with pytest.raises(ValueError, match="needs data"):
        quiet_trainer(tmp_path).test(LinearModel())


def test_limit_fraction_on_a_loader_without_length_is_rejected_for_eval(tmp_path):
    from torch.utils.data import DataLoader

    from helpers import Stream

    with pytest.raises(ValueError, match="limit_test_batches"):
        quiet_trainer(tmp_path, limit_test_batches=0.5).test(LinearModel(), DataLoader(Stream(16), batch_size=8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"callbacks": 5}, r"callbacks\[0\]=5 must be a callback instance"),
        ({"callbacks": [object()]}, r"callbacks\[0\]=<object object at .*> must be a callback instance"),
        ({"min_epochs": 5, "max_epochs": 2}, "min_epochs=5 is more than max_epochs=2"),
        ({"min_steps": 50, "max_steps": 10}, "min_steps=50 is more than max_steps=10"),
    ],
)
def test_inconsistent_or_non_callback_arguments_fail_at_construction(tmp_path, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ember.Trainer(default_root_dir=tmp_path, **kwargs)


def test_validate_and_predict_after_fit_leave_no_event_file_open(tmp_path):
    pytest.importorskip("tensorboard")
    import os

    from ember.loggers import TensorBoardLogger
    from helpers import LinearModel, loader

    def open_event_files() -> list[str]:
        paths = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
        return [p for p in paths if "tfevents" in p and p.startswith(str(tmp_path))]

    logger = TensorBoardLogger(tmp_path)
    trainer = ember.Trainer(
        default_root_dir=tmp_path, logger=logger, max_epochs=1, enable_progress_bar=False, enable_model_summary=False
    )
    model = LinearModel()
    trainer.fit(model, loader(16))
    assert open_event_files() == []  # fit closes its files
    trainer.validate(model, loader(16), verbose=False)
    assert open_event_files() == []  # and so does every other stage
    trainer.predict(model, loader(16))
    assert open_event_files() == []
