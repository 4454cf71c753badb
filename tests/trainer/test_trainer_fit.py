"""Trainer.fit end to end: convergence, loop counters, data limits, validation scheduling."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

import ember
from helpers import (
    TRUE_B,
    TRUE_W,
    LinearModel,
    Stream,
    copy_weights,
    loader,
    quiet_trainer,
    regression_data,
)


class CountingModel(LinearModel):
    """Counts validation steps, validation runs and when they happen (by global step)."""

    def __init__(self) -> None:
        super().__init__()
        self.val_steps = 0
        self.val_runs: list[tuple[int, bool]] = []  # (global_step, sanity_checking)

    def validation_step(self, batch, batch_idx):
        self.val_steps += 1
        super().validation_step(batch, batch_idx)

    def on_validation_start(self) -> None:
        self.val_runs.append((self.global_step, self.trainer.sanity_checking))


# ---------------------------------------------------------------------- convergence and counters


def test_linear_regression_converges_to_true_weights(tmp_path):
    torch.manual_seed(0)
    model = LinearModel(lr=0.1)
    trainer = quiet_trainer(tmp_path, max_epochs=20)
    trainer.fit(model, loader(64, batch_size=8))
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=1e-3)
    assert torch.allclose(model.layer.bias.detach(), TRUE_B, atol=1e-3)
    assert model.train_losses[-1].item() < 1e-6
    assert trainer.global_step == 20 * 8
    assert trainer.current_epoch == 20
    assert model.training_step_calls == 160
    assert model.global_step == 160 and model.current_epoch == 20


def test_fit_matches_a_hand_written_loop_exactly(tmp_path):
    torch.manual_seed(1)
    model = LinearModel(lr=0.05)
    reference = nn.Linear(3, 1)
    copy_weights(model.layer, reference)
    data = loader(40, batch_size=8)

    quiet_trainer(tmp_path, max_epochs=3).fit(model, data)

    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    for _ in range(3):
        for x, y in data:
            loss = F.mse_loss(reference(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(model.layer.weight.detach(), reference.weight.detach(), rtol=0, atol=1e-7)
    torch.testing.assert_close(model.layer.bias.detach(), reference.bias.detach(), rtol=0, atol=1e-7)


def test_model_is_in_train_mode_during_training_and_eval_mode_during_validation(tmp_path):
    modes = []

    class Modes(LinearModel):
        def training_step(self, batch, batch_idx):
            modes.append(("train", self.training, torch.is_grad_enabled()))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            modes.append(("val", self.training, torch.is_grad_enabled()))

    model = Modes()
    quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0, limit_train_batches=2).fit(
        model, loader(16), loader(8)
    )
    assert modes == [("train", True, True), ("train", True, True), ("val", False, False)]
    assert model.training  # restored after validation


def test_min_epochs_keeps_training_when_should_stop_is_set_early(tmp_path):
    class StopAtOnce(LinearModel):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.trainer.should_stop = True

    model = StopAtOnce()
    trainer = quiet_trainer(tmp_path, max_epochs=10, min_epochs=3)
    trainer.fit(model, loader(32, batch_size=8))
    # should_stop is honoured only once min_epochs is reached, at the end of that epoch
    assert model.training_step_calls == 3 * 4
    assert trainer.current_epoch == 3
    assert trainer.should_stop


def test_should_stop_from_a_callback_ends_fit(tmp_path):
    class Stopper(ember.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                trainer.should_stop = True

    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=10, callbacks=[Stopper()])
    trainer.fit(model, loader(64, batch_size=8))
    assert trainer.global_step == 3
    assert model.training_step_calls == 3


def test_training_step_returning_none_skips_the_backward_but_counts_the_step(tmp_path):
    """As Lightning: the optimizer still steps (with no gradients: nothing changes) and counts."""

    class SkipOdd(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return None if batch_idx % 2 else loss

    model = SkipOdd()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader(64, batch_size=8))
    assert model.training_step_calls == 8
    assert trainer.global_step == 8


def test_training_step_may_return_a_dict_with_loss(tmp_path):
    class DictLoss(LinearModel):
        def training_step(self, batch, batch_idx):
            return {"loss": super().training_step(batch, batch_idx), "extra": 1}

    torch.manual_seed(0)
    model = DictLoss()
    quiet_trainer(tmp_path, max_epochs=20).fit(model, loader(64))
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=1e-3)


def test_training_step_returning_a_dict_without_loss_raises(tmp_path):
    class NoLoss(LinearModel):
        def training_step(self, batch, batch_idx):
            return {"los": super().training_step(batch, batch_idx)}

    with pytest.raises(ValueError, match="'loss'"):
        quiet_trainer(tmp_path, max_epochs=1).fit(NoLoss(), loader(16))


def test_fit_twice_restarts_the_counters(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, loader(16, batch_size=8))
    assert (trainer.global_step, trainer.current_epoch) == (4, 2)
    trainer.fit(model, loader(24, batch_size=8))
    assert (trainer.global_step, trainer.current_epoch) == (6, 2)
    assert model.training_step_calls == 10


# ---------------------------------------------------------------------- plain nn.Module


class PlainModule(nn.Module):
    """Not an ember.Module: only the methods the Trainer calls."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.steps = 0
        self.val_steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        x, y = batch
        return F.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.val_steps += 1

    def predict_step(self, batch, batch_idx):
        return self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_plain_torch_module_is_accepted(tmp_path):
    torch.manual_seed(0)
    model = PlainModule()
    trainer = quiet_trainer(tmp_path, max_epochs=20, num_sanity_val_steps=0)
    trainer.fit(model, loader(64), loader(16))
    assert trainer.global_step == 160
    assert model.steps == 160
    assert model.val_steps == 20 * 2
    assert torch.allclose(model.layer.weight.detach(), TRUE_W, atol=1e-3)
    preds = trainer.predict(model, loader(16))
    assert [p.shape for p in preds] == [torch.Size([8, 1])] * 2


def test_plain_module_without_predict_step_fails_before_running(tmp_path):
    model = PlainModule()
    del PlainModule.predict_step  # restored below
    try:
        with pytest.raises(TypeError, match="predict_step"):
            quiet_trainer(tmp_path).predict(model, loader(16))
    finally:
        PlainModule.predict_step = lambda self, batch, batch_idx: self.layer(batch[0])


# ---------------------------------------------------------------------- data without a length, limits, max_steps


def test_iterable_dataset_epochs_end_when_the_data_ends(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, DataLoader(Stream(40), batch_size=8))
    assert model.training_step_calls == 15
    assert trainer.global_step == 15
    assert trainer.current_epoch == 3
    assert trainer.num_training_batches is None


def test_iterable_dataset_with_uneven_last_batch(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, DataLoader(Stream(42), batch_size=8))
    assert model.train_batch_sizes == [8, 8, 8, 8, 8, 2] * 2
    assert trainer.global_step == 12


def test_iterable_dataset_limit_train_batches_int(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_train_batches=3)
    trainer.fit(model, DataLoader(Stream(40), batch_size=8))
    assert model.training_step_calls == 9
    assert trainer.global_step == 9
    assert trainer.current_epoch == 3


def test_iterable_dataset_fraction_limit_is_rejected(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=0.5)
    with pytest.raises(ValueError, match="limit_train_batches"):
        trainer.fit(LinearModel(), DataLoader(Stream(40), batch_size=8))


def test_iterable_dataset_max_steps(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=10, max_steps=7)
    trainer.fit(model, DataLoader(Stream(40), batch_size=8))
    assert trainer.global_step == 7
    assert model.training_step_calls == 7


def test_iterable_validation_data_without_length(tmp_path):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model, loader(16), DataLoader(Stream(24), batch_size=8))
    assert model.val_steps == 2 * 3
    assert "val_loss" in trainer.callback_metrics


def test_max_steps_stops_mid_epoch_at_exactly_that_step(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=5, max_steps=11)
    trainer.fit(model, loader(64, batch_size=8))  # 8 batches per epoch
    assert trainer.global_step == 11
    assert model.training_step_calls == 11


class EpochRecorder(CountingModel):
    def __init__(self) -> None:
        super().__init__()
        self.epoch_ends: list[int] = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_ends.append(self.global_step)


def test_max_steps_mid_epoch_still_ends_the_epoch_as_lightning_does(tmp_path):
    model = EpochRecorder()
    trainer = quiet_trainer(tmp_path, max_epochs=5, max_steps=11, num_sanity_val_steps=0)
    trainer.fit(model, loader(64, batch_size=8), loader(16))
    assert trainer.global_step == 11
    assert model.epoch_ends == [8, 11]  # the cut epoch's end hook runs
    assert trainer.current_epoch == 2  # and it counts as completed
    # its epoch value is the weighted mean of the 3 batches it ran
    expected = torch.stack(model.train_losses[8:]).mean()
    torch.testing.assert_close(trainer.callback_metrics["loss"], expected)
    # validation ran after epoch 1 only: an epoch cut short by max_steps is not validated (Lightning)
    assert [step for step, _ in model.val_runs] == [8]


def test_max_steps_on_the_last_batch_of_an_epoch_validates_that_epoch(tmp_path):
    model = EpochRecorder()
    trainer = quiet_trainer(tmp_path, max_epochs=5, max_steps=16, num_sanity_val_steps=0)
    trainer.fit(model, loader(64, batch_size=8), loader(16))
    assert model.epoch_ends == [8, 16]
    assert [step for step, _ in model.val_runs] == [8, 16]
    assert trainer.current_epoch == 2


def test_should_stop_mid_epoch_ends_that_epoch_with_validation(tmp_path):
    class StopAt3(EpochRecorder):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            if self.global_step == 3:
                self.trainer.should_stop = True

    model = StopAt3()
    trainer = quiet_trainer(tmp_path, max_epochs=5, num_sanity_val_steps=0)
    trainer.fit(model, loader(64, batch_size=8), loader(16))
    assert trainer.global_step == 3
    assert model.epoch_ends == [3]
    assert [step for step, _ in model.val_runs] == [3]
    assert trainer.current_epoch == 1


def test_max_time_stops_the_run(tmp_path):
    import time

    class Slow(LinearModel):
        def training_step(self, batch, batch_idx):
            time.sleep(0.02)
            return super().training_step(batch, batch_idx)

    model = Slow()
    trainer = quiet_trainer(tmp_path, max_epochs=1000, max_time={"seconds": 0.3})
    trainer.fit(model, loader(64, batch_size=8))
    assert 5 <= trainer.global_step < 100
    assert trainer.should_stop


def test_max_steps_minus_one_means_no_limit(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=2, max_steps=-1)
    trainer.fit(model, loader(32, batch_size=8))
    assert trainer.global_step == 8


def test_max_epochs_none_with_max_steps(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=None, max_steps=10)
    trainer.fit(model, loader(32, batch_size=8))
    assert trainer.global_step == 10


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 4), (0.25, 2), (1.0, 8), (3, 3), (100, 8), (0.01, 1)])
def test_limit_train_batches(tmp_path, limit, expected):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=limit)
    trainer.fit(model, loader(64, batch_size=8))
    assert model.training_step_calls == 2 * expected
    assert trainer.global_step == 2 * expected
    assert trainer.num_training_batches == expected


def test_limit_train_batches_zero_trains_nothing(tmp_path):
    model = LinearModel()
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=0)
    with pytest.warns(UserWarning, match="limit_train_batches"):
        trainer.fit(model, loader(64))
    assert model.training_step_calls == 0
    assert trainer.global_step == 0


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 2), (0.25, 1), (2, 2), (1.0, 4), (0, 0)])
def test_limit_val_batches(tmp_path, limit, expected):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=limit, num_sanity_val_steps=0)
    trainer.fit(model, loader(16), loader(32, batch_size=8))
    assert model.val_steps == expected
    assert trainer.num_val_batches == ([expected] if limit else [])  # 0: no loader asked for, as Lightning


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 2), (3, 3), (1.0, 4)])
def test_limit_test_batches(tmp_path, limit, expected):
    calls = []

    class T(LinearModel):
        def test_step(self, batch, batch_idx):
            calls.append(batch_idx)

    quiet_trainer(tmp_path, limit_test_batches=limit).test(T(), loader(32, batch_size=8), verbose=False)
    assert calls == list(range(expected))


def test_limit_predict_batches(tmp_path):
    preds = quiet_trainer(tmp_path, limit_predict_batches=2).predict(LinearModel(), loader(32, batch_size=8))
    assert len(preds) == 2


# ---------------------------------------------------------------------- validation scheduling


def test_val_check_interval_float_runs_validation_four_times_per_epoch(tmp_path):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=2, val_check_interval=0.25, num_sanity_val_steps=0)
    trainer.fit(model, loader(64, batch_size=8), loader(16, batch_size=8))  # 8 train batches
    assert [step for step, _ in model.val_runs] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert model.val_steps == 8 * 2


def test_val_check_interval_int(tmp_path):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, val_check_interval=3, num_sanity_val_steps=0)
    trainer.fit(model, loader(64, batch_size=8), loader(16, batch_size=8))
    # after batches 3 and 6 only: as in Lightning, the epoch's end validates when its last batch is a
    # validation batch (tests/compat/lightning/test_lightning_validation.py checks it against Lightning)
    assert [step for step, _ in model.val_runs] == [3, 6]


def test_check_val_every_n_epoch(tmp_path):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=5, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    trainer.fit(model, loader(16, batch_size=8), loader(16, batch_size=8))
    assert [step for step, _ in model.val_runs] == [4, 8]


@pytest.mark.parametrize(("sanity", "expected"), [(0, 0), (2, 2), (-1, 3)])
def test_num_sanity_val_steps(tmp_path, sanity, expected):
    seen_before_training: list[int] = []

    class Sanity(CountingModel):
        def on_train_start(self) -> None:
            seen_before_training.append(self.val_steps)
            assert "val_loss" not in self.trainer.callback_metrics  # sanity check logs nothing

    model = Sanity()
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=sanity)
    trainer.fit(model, loader(16), loader(24, batch_size=8))  # 3 val batches
    assert seen_before_training == [expected]
    assert model.val_runs[0] == ((0, True) if expected else (2, False))
    assert model.val_steps == expected + 3
    assert not trainer.sanity_checking


def test_sanity_check_is_skipped_without_validation_data(tmp_path):
    model = CountingModel()
    quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=2).fit(model, loader(16))
    assert model.val_runs == []


@pytest.mark.parametrize(("fast", "n"), [(True, 1), (3, 3)])
def test_fast_dev_run(tmp_path, fast, n):
    model = CountingModel()
    trainer = ember.Trainer(
        fast_dev_run=fast,
        max_epochs=50,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader(64, batch_size=8), loader(64, batch_size=8))
    assert model.training_step_calls == n
    assert trainer.global_step == n
    assert model.val_steps == n  # no sanity check, n validation batches
    assert trainer.logger is None  # fast_dev_run turns the logger off
    assert not (tmp_path / "ember_logs").exists()


def test_validation_data_without_a_validation_step_is_skipped(tmp_path):
    class NoVal(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)
            self.steps = 0

        def training_step(self, batch, batch_idx):
            self.steps += 1
            return F.mse_loss(self.layer(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = NoVal()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.warns(UserWarning, match="validation_step"):  # as Lightning: skipped, with a warning
        trainer.fit(model, loader(16), loader(16))
    assert model.steps == 2
    assert trainer.num_val_batches == []


def test_loaders_from_the_module(tmp_path):
    class WithLoaders(CountingModel):
        def train_dataloader(self):
            return loader(32, batch_size=8)

        def val_dataloader(self):
            return loader(16, batch_size=8)

    model = WithLoaders()
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.training_step_calls == 4
    assert model.val_steps == 2


def test_fit_without_training_data_raises(tmp_path):
    with pytest.raises(ValueError, match="training data"):
        quiet_trainer(tmp_path).fit(LinearModel())


def test_regression_data_is_what_the_helpers_claim():
    ds = regression_data(8)
    x, y = ds.tensors
    torch.testing.assert_close(y, x @ TRUE_W.T + TRUE_B)


# ---------------------------------------------------------------------- grad modes and torch flags


@pytest.mark.parametrize("inference_mode", [True, False])
def test_validation_runs_under_inference_mode_or_no_grad(tmp_path, inference_mode):
    seen = []

    class Probe(LinearModel):
        def validation_step(self, batch, batch_idx):
            seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    trainer = quiet_trainer(tmp_path, max_epochs=1, inference_mode=inference_mode, num_sanity_val_steps=0)
    model = Probe()
    trainer.fit(model, loader(16), loader(8))
    trainer.validate(model, loader(8), verbose=False)
    assert seen == [(False, False), (inference_mode, False)]  # as Lightning: inside fit always no_grad


def test_detect_anomaly_is_on_during_the_run_only(tmp_path):
    seen = []

    class Probe(LinearModel):
        def training_step(self, batch, batch_idx):
            seen.append(torch.is_anomaly_enabled())
            return super().training_step(batch, batch_idx)

    quiet_trainer(tmp_path, max_epochs=1, detect_anomaly=True).fit(Probe(), loader(16))
    assert seen == [True, True]
    assert not torch.is_anomaly_enabled()


def test_deterministic_turns_on_deterministic_algorithms(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    try:
        quiet_trainer(tmp_path, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
