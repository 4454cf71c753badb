"""ember.DataModule: the data hooks the Trainer calls, and where loaders come from."""

from __future__ import annotations

import pytest
import yaml

import ember
from ember.loggers import CSVLogger
from helpers import LinearModel, loader, quiet_trainer


class RecordingData(ember.DataModule):
    def __init__(self, n_train: int = 32, batch_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.calls: list[tuple] = []

    def prepare_data(self) -> None:
        self.calls.append(("prepare_data",))

    def setup(self, stage: str) -> None:
        self.calls.append(("setup", stage))

    def teardown(self, stage: str) -> None:
        self.calls.append(("teardown", stage))

    def train_dataloader(self):
        self.calls.append(("train_dataloader",))
        return loader(self.hparams.n_train, batch_size=self.hparams.batch_size)

    def val_dataloader(self):
        self.calls.append(("val_dataloader",))
        return loader(16, batch_size=8)

    def test_dataloader(self):
        self.calls.append(("test_dataloader",))
        return loader(24, batch_size=8)

    def predict_dataloader(self):
        self.calls.append(("predict_dataloader",))
        return loader(8, batch_size=4)


class Model(LinearModel):
    def __init__(self):
        super().__init__()
        self.val_steps = 0
        self.test_steps = 0
        self.setup_saw_datamodule_setup = None

    def setup(self, stage):
        calls = getattr(self.trainer.datamodule, "calls", None)
        self.setup_saw_datamodule_setup = calls is not None and ("setup", stage) in calls

    def validation_step(self, batch, batch_idx):
        self.val_steps += 1
        super().validation_step(batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self.test_steps += 1
        super().test_step(batch, batch_idx)


def test_fit_calls_prepare_setup_loaders_teardown(tmp_path):
    dm = RecordingData(n_train=40)
    model = Model()
    trainer = quiet_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert dm.calls == [
        ("prepare_data",),
        ("setup", "fit"),
        ("train_dataloader",),
        ("val_dataloader",),
        ("teardown", "fit"),
    ]
    assert model.training_step_calls == 2 * 5  # 40 samples in batches of 8: the datamodule's loader
    assert model.val_steps == 2 * 2
    assert model.setup_saw_datamodule_setup is True
    assert trainer.datamodule is dm and dm.trainer is trainer


@pytest.mark.parametrize(
    ("method", "loader_call", "stage"),
    [
        ("validate", "val_dataloader", "validate"),
        ("test", "test_dataloader", "test"),
        ("predict", "predict_dataloader", "predict"),
    ],
)
def test_eval_stages_use_the_datamodule(tmp_path, method, loader_call, stage):
    dm = RecordingData()
    model = Model()
    trainer = quiet_trainer(tmp_path)
    kwargs = {} if method == "predict" else {"verbose": False}
    out = getattr(trainer, method)(model, datamodule=dm, **kwargs)
    assert dm.calls == [("prepare_data",), ("setup", stage), (loader_call,), ("teardown", stage)]
    if method == "test":
        assert model.test_steps == 3
        assert set(out[0]) == {"test_loss"}
    elif method == "predict":
        assert len(out) == 2 and out[0].shape == (4, 1)
    else:
        assert model.val_steps == 2


def test_teardown_runs_when_fit_fails(tmp_path):
    class Failing(Model):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("fail")

    dm = RecordingData()
    with pytest.raises(RuntimeError, match="fail"):
        quiet_trainer(tmp_path, max_epochs=1).fit(Failing(), datamodule=dm)
    assert dm.calls[-1] == ("teardown", "fit")


def test_datamodule_without_val_dataloader_fits_without_validation(tmp_path):
    class TrainOnly(ember.DataModule):
        def train_dataloader(self):
            return loader(16)

    model = Model()
    quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=TrainOnly())
    assert model.training_step_calls == 2
    assert model.val_steps == 0


def test_datamodule_loaders_take_precedence_over_the_module(tmp_path):
    class ModelWithLoader(Model):
        def train_dataloader(self):
            raise AssertionError("the datamodule's loader must be used")

    model = ModelWithLoader()
    quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0).fit(model, datamodule=RecordingData(n_train=16))
    assert model.training_step_calls == 2


def test_datamodule_without_the_needed_loader_raises(tmp_path):
    with pytest.raises(ValueError, match="test_dataloader"):
        quiet_trainer(tmp_path).test(Model(), datamodule=ember.DataModule())


def test_not_a_datamodule_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="datamodule"):
        quiet_trainer(tmp_path).fit(Model(), datamodule=object())


def test_datamodule_hparams(tmp_path):
    dm = RecordingData(n_train=24, batch_size=4)
    assert dict(dm.hparams) == {"n_train": 24, "batch_size": 4}
    assert dm.hparams.batch_size == 4
    assert dm.state_dict() == {}


def test_datamodule_hparams_are_logged_with_the_module_hparams(tmp_path):
    class HModel(Model):
        def __init__(self, lr: float = 0.5):
            super().__init__()
            self.save_hyperparameters()

    logger = CSVLogger(tmp_path)
    quiet_trainer(tmp_path, max_epochs=1, logger=logger, num_sanity_val_steps=0).fit(
        HModel(), datamodule=RecordingData(n_train=16)
    )
    with open(f"{logger.log_dir}/hparams.yaml") as f:
        assert yaml.safe_load(f) == {"lr": 0.5, "n_train": 16, "batch_size": 8}


def test_base_datamodule_loaders_raise_not_implemented():
    dm = ember.DataModule()
    for name in ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader"):
        with pytest.raises(NotImplementedError, match=name):
            getattr(dm, name)()


def test_from_datasets_makes_the_loader_methods(tmp_path):
    from helpers import regression_data

    dm = ember.DataModule.from_datasets(regression_data(40), {"a": regression_data(16)}, batch_size=8)
    assert len(dm.train_dataloader()) == 5 and {k: len(v) for k, v in dm.val_dataloader().items()} == {"a": 2}
    with pytest.raises(NotImplementedError):
        dm.test_dataloader()
    model = Model()
    quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0).fit(model, datamodule=dm)
    assert model.training_step_calls == 5 and model.val_steps == 2


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(num_workers=-1), dict(batch_size=True)])
def test_from_datasets_checks_its_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ember.DataModule.from_datasets(**bad)


def test_load_from_checkpoint_without_a_needed_argument_names_the_file(tmp_path):
    class Needs(ember.DataModule):
        def __init__(self, root: str) -> None:
            super().__init__()
            self.root = root

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Model(), datamodule=RecordingData())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(ember.checkpoint.CheckpointError, match=r"m\.ckpt.*root"):
        Needs.load_from_checkpoint(path)
    assert Needs.load_from_checkpoint(path, root="/data").root == "/data"


def test_dataclass_batches_have_their_tensors_moved():
    import dataclasses

    import torch

    from ember.runtime.precision import apply_to_tensors

    @dataclasses.dataclass(frozen=True)
    class Pair:
        x: torch.Tensor
        tags: list

    batch = Pair(torch.ones(2), [torch.zeros(1), "a"])
    moved = apply_to_tensors(batch, lambda t: t.double())
    assert type(moved) is Pair and moved is not batch and batch.x.dtype == torch.float32
    assert moved.x.dtype == torch.float64 and moved.tags[0].dtype == torch.float64 and moved.tags[1] == "a"
