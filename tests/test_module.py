"""ember.Module on its own: hyperparameters, trainer context, utilities, default steps."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

import ember
from ember.loggers import CSVLogger
from helpers import LinearModel, loader, quiet_trainer


class WithHparams(ember.Module):
    def __init__(
        self,
        lr: float = 0.1,
        hidden: int = 4,
        name: str = "net",
        sizes=(1, 2),
        extra=None,
        backbone: nn.Module | None = None,
        **kwargs,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(3, hidden)


def test_save_hyperparameters_from_init_arguments():
    model = WithHparams(lr=0.5, extra={"a": [1, 2.5, None]}, dropout=0.2)
    assert dict(model.hparams) == {
        "lr": 0.5,
        "hidden": 4,
        "name": "net",
        "sizes": [1, 2],  # tuples become lists: plain values only
        "extra": {"a": [1, 2.5, None]},
        "backbone": None,
        "dropout": 0.2,  # **kwargs are flattened in
    }
    assert model.hparams.lr == 0.5
    with pytest.raises(AttributeError, match="momentum"):
        _ = model.hparams.momentum


def test_non_plain_hyperparameters_are_left_out_with_a_warning():
    with pytest.warns(UserWarning) as record:
        model = WithHparams(backbone=nn.Linear(2, 2), extra=object())
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "'backbone' is a Linear" in messages[0]
    assert "'extra' is a object" in messages[1]
    assert all(w.filename == __file__ for w in record)  # points at the user's save_hyperparameters() line
    assert "backbone" not in model.hparams and "extra" not in model.hparams
    assert model.hparams.lr == 0.1


def test_save_hyperparameters_by_name_and_ignore():
    class Named(ember.Module):
        def __init__(self, a: int = 1, b: int = 2, c: int = 3):
            super().__init__()
            self.save_hyperparameters("a", "c")

    class Ignoring(ember.Module):
        def __init__(self, a: int = 1, b: int = 2, c: int = 3):
            super().__init__()
            self.save_hyperparameters(ignore=["b"])

    assert dict(Named(5, 6, 7).hparams) == {"a": 5, "c": 7}
    assert dict(Ignoring(5, 6, 7).hparams) == {"a": 5, "c": 7}


def test_save_hyperparameters_unknown_name_raises():
    class Bad(ember.Module):
        def __init__(self, a: int = 1):
            super().__init__()
            self.save_hyperparameters("zzz")

    with pytest.raises(ValueError, match="zzz"):
        Bad()


def test_save_hyperparameters_from_a_dict():
    class FromDict(ember.Module):
        def __init__(self, config: dict):
            super().__init__()
            self.save_hyperparameters(config)

    model = FromDict({"lr": 0.3, "layers": [8, 8]})
    assert dict(model.hparams) == {"lr": 0.3, "layers": [8, 8]}


def test_hparams_are_written_to_hparams_yaml(tmp_path):
    class Trainable(LinearModel):
        def __init__(self, lr: float = 0.05, tag: str = "x", net: nn.Module | None = None):
            super().__init__(lr)
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match="'net'"):
        model = Trainable(lr=0.2, net=nn.ReLU())
    logger = CSVLogger(tmp_path)
    quiet_trainer(tmp_path, max_epochs=1, logger=logger).fit(model, loader(16))
    with open(tmp_path / "ember_logs" / "version_0" / "hparams.yaml") as f:
        assert yaml.safe_load(f) == {"lr": 0.2, "tag": "x"}


def test_save_hyperparameters_logger_false_keeps_them_out_of_the_logger(tmp_path):
    class Quiet(LinearModel):
        def __init__(self, lr: float = 0.05):
            super().__init__(lr)
            self.save_hyperparameters(logger=False)

    logger = CSVLogger(tmp_path)
    quiet_trainer(tmp_path, max_epochs=1, logger=logger).fit(Quiet(), loader(16))
    assert not (tmp_path / "ember_logs" / "version_0" / "hparams.yaml").exists()


def test_hparams_empty_by_default():
    assert dict(LinearModel().hparams) == {}


# ---------------------------------------------------------------------- trainer context


def test_trainer_context_before_and_during_fit(tmp_path):
    seen = {}

    class Context(LinearModel):
        def training_step(self, batch, batch_idx):
            seen["trainer"] = self.trainer
            seen["epoch"] = self.current_epoch
            seen["step"] = self.global_step
            seen["device"] = self.device
            return super().training_step(batch, batch_idx)

    model = Context()
    with pytest.raises(RuntimeError, match="not attached"):
        _ = model.trainer
    assert model.current_epoch == 0 and model.global_step == 0
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, loader(16))
    assert seen == {"trainer": trainer, "epoch": 1, "step": 3, "device": torch.device("cpu")}
    assert model.trainer is trainer
    # the back-reference is a plain attribute, not a registered submodule
    assert "_trainer" not in dict(model.named_modules())
    assert all(not k.startswith("_trainer") for k in model.state_dict())


def test_trainer_can_be_set_and_cleared():
    model = LinearModel()
    trainer = ember.Trainer(enable_progress_bar=False, enable_model_summary=False, logger=False)
    model.trainer = trainer
    assert model.trainer is trainer
    model.trainer = None
    with pytest.raises(RuntimeError):
        _ = model.trainer


def test_device_and_dtype():
    model = LinearModel()
    assert model.device == torch.device("cpu")
    assert model.dtype == torch.float32
    model.double()
    assert model.dtype == torch.float64

    class Empty(ember.Module):
        pass

    assert Empty().device == torch.device("cpu")
    assert Empty().dtype == torch.get_default_dtype()


# ---------------------------------------------------------------------- utilities and defaults


def test_freeze_and_unfreeze():
    model = LinearModel()
    model.freeze()
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())
    assert model.training


def test_print_only_on_rank_zero(capsys, tmp_path):
    model = LinearModel()
    model.print("no trainer")
    model.trainer = quiet_trainer(tmp_path)
    model.print("rank", 0)
    assert capsys.readouterr().out == "no trainer\nrank 0\n"


def test_default_predict_step_uses_forward_on_the_inputs():
    model = LinearModel()
    x = torch.randn(4, 3)
    torch.testing.assert_close(model.predict_step((x, torch.zeros(4, 1)), 0), model(x))
    torch.testing.assert_close(model.predict_step(x, 0), model(x))


def test_default_predict_returns_one_output_per_batch(tmp_path):
    model = LinearModel()
    preds = quiet_trainer(tmp_path).predict(model, loader(20, batch_size=8))
    assert [p.shape for p in preds] == [(8, 1), (8, 1), (4, 1)]
    x = loader(20, batch_size=8).dataset.tensors[0]
    torch.testing.assert_close(torch.cat(preds), model(x).detach())
    assert not any(p.requires_grad for p in preds)


def test_unimplemented_steps_raise_not_implemented():
    model = ember.Module()
    for name in ("training_step", "validation_step", "test_step"):
        with pytest.raises(NotImplementedError, match=name):
            getattr(model, name)(None, 0)
    with pytest.raises(NotImplementedError, match="configure_optimizers"):
        model.configure_optimizers()


def test_named_hooks_lists_only_overridden_hooks():
    class Some(ember.Module):
        def on_fit_start(self):
            pass

        def on_train_batch_end(self, outputs, batch, batch_idx):
            pass

    assert sorted(Some().named_hooks()) == ["on_fit_start", "on_train_batch_end"]
    assert list(ember.Module().named_hooks()) == []


def test_transfer_batch_to_device_handles_nested_batches():
    model = LinearModel()
    batch = {"x": torch.zeros(2), "pair": (torch.ones(1), [torch.arange(3)]), "label": "text"}
    moved = model.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert moved["label"] == "text"
    assert isinstance(moved["pair"], tuple) and isinstance(moved["pair"][1], list)
    torch.testing.assert_close(moved["pair"][1][0], torch.arange(3))


def test_batch_transfer_hooks_change_what_the_step_sees(tmp_path):
    seen = []

    class Scaled(LinearModel):
        def on_before_batch_transfer(self, batch, dataloader_idx):
            x, y = batch
            return x * 0, y

        def on_after_batch_transfer(self, batch, dataloader_idx):
            x, y = batch
            return x + 1, y

        def training_step(self, batch, batch_idx):
            seen.append(float(batch[0].mean()))
            return super().training_step(batch, batch_idx)

    quiet_trainer(tmp_path, max_epochs=1).fit(Scaled(), loader(16))
    assert seen == [1.0, 1.0]


def test_example_input_array_default():
    assert LinearModel().example_input_array is None


def test_clip_gradients_rejects_bad_algorithm():
    model = LinearModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3)).sum().backward()
    with pytest.raises(ValueError, match="'bogus'"):
        model.clip_gradients(opt, 1.0, "bogus")
