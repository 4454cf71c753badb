"""self.log: what reaches the loggers (a real CSVLogger read back), callback_metrics,
progress_bar_metrics, epoch reduction, stage defaults, several dataloaders, and no host sync per step."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ember.loggers import CSVLogger
from helpers import LinearModel, loader, quiet_trainer


def read_csv(logger: CSVLogger) -> list[dict[str, str]]:
    with open(logger.metrics_file, newline="") as f:
        return list(csv.DictReader(f))


def rows_with(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]


class StepLogger(LinearModel):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss)
        return loss


def test_step_values_reach_the_csv_every_log_every_n_steps(tmp_path):
    model = StepLogger()
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=3)
    trainer.fit(model, loader(40, batch_size=8))  # 5 batches per epoch, 10 steps
    rows = read_csv(logger)
    got = rows_with(rows, "loss")
    assert [step for step, _ in got] == [2, 5, 8]  # Lightning's step: optimizer steps before this one
    expected = [model.train_losses[i].item() for i in (2, 5, 8)]
    assert [v for _, v in got] == pytest.approx(expected, rel=1e-6)
    # Lightning's logged_metrics: the last step's value (step 9), though that step was not written
    assert trainer.logged_metrics["loss"] == pytest.approx(model.train_losses[-1].item(), rel=1e-6)
    assert trainer.logged_metrics["loss"] != pytest.approx(expected[-1], rel=1e-6)
    assert logger.log_dir == str(tmp_path / "run" / "version_0")


def test_log_every_n_steps_one_logs_every_step(tmp_path):
    model = StepLogger()
    logger = CSVLogger(tmp_path)
    quiet_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1).fit(model, loader(32, batch_size=8))
    got = rows_with(read_csv(logger), "loss")
    # Lightning's step: the first row is at step 0
    assert got == [(i, pytest.approx(model.train_losses[i].item(), rel=1e-6)) for i in range(4)]


def test_default_logger_writes_under_default_root_dir(tmp_path):
    # Lightning's default: TensorBoard when it is installed, else CSV; both under default_root_dir
    trainer = quiet_trainer(tmp_path, logger=True, max_epochs=1, log_every_n_steps=1)
    trainer.fit(StepLogger(), loader(16))
    assert trainer.logger is not None and trainer.loggers == [trainer.logger]
    assert trainer.log_dir == str(tmp_path / "ember_logs" / "version_0")
    assert any((tmp_path / "ember_logs" / "version_0").iterdir())
    assert trainer.logged_metrics.keys() == {"loss"}


def test_default_csv_logger_without_tensorboard(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    trainer = quiet_trainer(tmp_path, logger=True, max_epochs=1, log_every_n_steps=1)
    trainer.fit(StepLogger(), loader(16))
    assert isinstance(trainer.logger, CSVLogger)
    assert (tmp_path / "ember_logs" / "version_0" / "metrics.csv").exists()
    assert len(rows_with(read_csv(trainer.logger), "loss")) == 2


class EpochMean(LinearModel):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss


def test_epoch_mean_is_weighted_by_batch_size(tmp_path):
    model = EpochMean()
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger)
    trainer.fit(model, loader(20, batch_size=8))  # batches of 8, 8, 4
    assert model.train_batch_sizes == [8, 8, 4] * 2
    losses = torch.stack(model.train_losses).double()
    sizes = torch.tensor(model.train_batch_sizes, dtype=torch.float64)
    per_epoch = [float((losses[i : i + 3] * sizes[i : i + 3]).sum() / sizes[i : i + 3].sum()) for i in (0, 3)]
    unweighted = float(losses[3:].mean())
    assert abs(per_epoch[1] - unweighted) > 1e-4  # the weighting matters for this data
    rows = read_csv(logger)
    assert rows_with(rows, "loss") == [  # Lightning's step: the epoch's last batch
        (2, pytest.approx(per_epoch[0], rel=1e-5)),
        (5, pytest.approx(per_epoch[1], rel=1e-5)),
    ]
    assert rows_with(rows, "epoch") == [(2, 0.0), (5, 1.0)]  # Lightning's step: the epoch's last batch
    assert float(trainer.callback_metrics["loss"]) == pytest.approx(per_epoch[1], rel=1e-5)
    assert isinstance(trainer.callback_metrics["loss"], torch.Tensor)


def test_explicit_batch_size_overrides_the_inferred_one(tmp_path):
    class Weighted(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("v", float(batch_idx), on_step=False, on_epoch=True, batch_size=batch_idx + 1)
            return loss

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Weighted(), loader(24, batch_size=8))
    # values 0, 1, 2 with weights 1, 2, 3
    assert float(trainer.callback_metrics["v"]) == pytest.approx((0 * 1 + 1 * 2 + 2 * 3) / 6)


def test_batch_size_is_inferred_from_dict_batches(tmp_path):
    class DictBatch(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = F.mse_loss(self(batch["x"]), batch["y"])
            self.log("n", float(len(batch["x"])), on_step=False, on_epoch=True)
            return loss

    ds = [{"x": torch.randn(3), "y": torch.randn(1)} for _ in range(10)]
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(DictBatch(), DataLoader(ds, batch_size=4))  # 4, 4, 2
    assert float(trainer.callback_metrics["n"]) == pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)


@pytest.mark.parametrize(
    ("reduce_fx", "expected"),
    [
        ("sum", 1 + 2 + 3 + 4),
        ("max", 4),
        ("min", 1),
        ("mean", (1 * 8 + 2 * 8 + 3 * 8 + 4 * 2) / 26),
        (torch.sum, 10),
        (torch.max, 4),
        (torch.min, 1),
        (torch.mean, (1 * 8 + 2 * 8 + 3 * 8 + 4 * 2) / 26),
    ],
)
def test_reduce_fx(tmp_path, reduce_fx, expected):
    class Reduce(LinearModel):
        def training_step(self, batch, batch_idx):
            self.log("value", torch.tensor(batch_idx + 1.0), on_step=False, on_epoch=True, reduce_fx=reduce_fx)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Reduce(), loader(26, batch_size=8))
    assert float(trainer.callback_metrics["value"]) == pytest.approx(expected)


def test_reduce_fx_in_validation(tmp_path):
    class Reduce(LinearModel):
        def validation_step(self, batch, batch_idx):
            self.log("vmax", torch.tensor(batch_idx * 2.0), reduce_fx="max")
            self.log("vsum", batch_idx + 1, reduce_fx="sum")

    results = quiet_trainer(tmp_path).validate(Reduce(), loader(40, batch_size=8), verbose=False)
    assert results == [{"vmax": 8.0, "vsum": 15.0}]


def test_bad_reduce_fx(tmp_path):
    class Bad(LinearModel):
        def training_step(self, batch, batch_idx):
            self.log("v", 1.0, reduce_fx="median")
            return super().training_step(batch, batch_idx)

    with pytest.raises(ValueError, match="median"):
        quiet_trainer(tmp_path, max_epochs=1).fit(Bad(), loader(16))


def test_on_step_and_on_epoch_give_step_and_epoch_names(tmp_path):
    class Both(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss, on_step=True, on_epoch=True)
            return loss

    model = Both()
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1)
    trainer.fit(model, loader(32, batch_size=8))
    epoch_mean = float(torch.stack(model.train_losses).mean())
    last = model.train_losses[-1].item()
    logged = trainer.logged_metrics
    assert logged["loss_step"] == pytest.approx(last, rel=1e-6)
    assert logged["loss_epoch"] == pytest.approx(epoch_mean, rel=1e-6)
    assert "loss" not in logged
    cb = trainer.callback_metrics
    assert float(cb["loss"]) == pytest.approx(epoch_mean, rel=1e-6)
    assert float(cb["loss_epoch"]) == pytest.approx(epoch_mean, rel=1e-6)
    assert float(cb["loss_step"]) == pytest.approx(last, rel=1e-6)
    rows = read_csv(logger)
    assert [s for s, _ in rows_with(rows, "loss_step")] == [0, 1, 2, 3]  # Lightning's step: from 0
    assert rows_with(rows, "loss_epoch") == [(3, pytest.approx(epoch_mean, rel=1e-6))]  # Lightning's: last batch


def test_callback_metrics_during_the_epoch_hold_the_latest_step_value(tmp_path):
    seen = []

    class Live(StepLogger):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            seen.append(float(self.trainer.callback_metrics["loss"]))

    model = Live()
    quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(24))
    assert seen == pytest.approx([v.item() for v in model.train_losses])


def test_prog_bar_values(tmp_path):
    class Bar(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("shown", loss, prog_bar=True)
            self.log("hidden", loss)
            self.log("shown_epoch_only", torch.tensor(2.0), prog_bar=True, on_step=False, on_epoch=True)
            return loss

    model = Bar()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader(24))
    bar = trainer.progress_bar_metrics
    assert set(bar) == {"shown", "shown_epoch_only"}
    assert bar["shown"] == pytest.approx(model.train_losses[-1].item(), rel=1e-6)
    assert bar["shown_epoch_only"] == 2.0
    assert all(type(v) is float for v in bar.values())


def test_logger_false_keeps_the_value_out_of_the_loggers(tmp_path):
    class NotLogged(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("private", loss, logger=False)
            self.log("public", loss)
            return loss

    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1)
    trainer.fit(NotLogged(), loader(16))
    assert "private" in trainer.callback_metrics
    assert "private" not in trainer.logged_metrics
    assert "private" not in read_csv(logger)[0]
    assert "public" in trainer.logged_metrics


def test_log_dict(tmp_path):
    class Many(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log_dict({"a": loss, "b": 2 * loss}, on_step=False, on_epoch=True)
            return loss

    model = Many()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader(16))
    mean = float(torch.stack(model.train_losses).mean())
    assert float(trainer.callback_metrics["a"]) == pytest.approx(mean)
    assert float(trainer.callback_metrics["b"]) == pytest.approx(2 * mean)


def test_logging_in_train_epoch_hooks_defaults_to_epoch(tmp_path):
    class EpochHooks(LinearModel):
        def on_train_epoch_start(self):
            self.log("start", float(self.current_epoch))

        def on_train_epoch_end(self):
            self.log("end", float(self.current_epoch) + 0.5)

    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger)
    trainer.fit(EpochHooks(), loader(16))
    rows = read_csv(logger)
    # Lightning's step: the epoch's last batch
    assert rows_with(rows, "start") == [(1, 0.0), (3, 1.0)]
    assert rows_with(rows, "end") == [(1, 0.5), (3, 1.5)]


# ---------------------------------------------------------------------- validation / test defaults


class ValTest(LinearModel):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.val_losses.append((loss.detach().clone(), len(x)))
        self.log("val_loss", loss)

    def test_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.val_losses.append((loss.detach().clone(), len(x)))
        self.log("test_loss", loss, prog_bar=True)

    def on_validation_epoch_start(self):
        self.val_losses = []

    on_test_epoch_start = on_validation_epoch_start


def _weighted(pairs):
    return sum(float(v) * n for v, n in pairs) / sum(n for _, n in pairs)


def test_validation_logs_epoch_means_by_default(tmp_path):
    model = ValTest()
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger, num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(model, loader(16), loader(20, batch_size=8))
    expected = _weighted(model.val_losses)
    assert float(trainer.callback_metrics["val_loss"]) == pytest.approx(expected, rel=1e-6)
    assert trainer.logged_metrics["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert "val_loss_step" not in trainer.logged_metrics
    rows = rows_with(read_csv(logger), "val_loss")
    assert [s for s, _ in rows] == [1, 3]  # once per validation run, at the step of the last batch (Lightning's)
    assert rows[-1][1] == pytest.approx(expected, rel=1e-6)


def test_validate_and_test_return_the_epoch_means(tmp_path):
    model = ValTest()
    trainer = quiet_trainer(tmp_path)
    val = trainer.validate(model, loader(20, batch_size=8), verbose=False)
    assert val == [{"val_loss": pytest.approx(_weighted(model.val_losses), rel=1e-6)}]
    test = trainer.test(model, loader(20, batch_size=8), verbose=False)
    assert test == [{"test_loss": pytest.approx(_weighted(model.val_losses), rel=1e-6)}]
    assert trainer.progress_bar_metrics["test_loss"] == pytest.approx(test[0]["test_loss"])
    assert float(trainer.callback_metrics["test_loss"]) == pytest.approx(test[0]["test_loss"])


def test_test_prints_results_when_verbose(tmp_path, capsys):
    quiet_trainer(tmp_path).test(ValTest(), loader(16), verbose=True)
    out = capsys.readouterr().out
    assert "Test metric" in out and "DataLoader 0" in out and "test_loss" in out  # Lightning's layout


def test_on_step_logging_in_validation_is_allowed(tmp_path):
    class StepVal(LinearModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx), on_step=True, on_epoch=True)

    trainer = quiet_trainer(tmp_path)
    results = trainer.validate(StepVal(), loader(24, batch_size=8), verbose=False)
    assert results == [{"v_epoch": pytest.approx(1.0)}]  # the key it was logged under, as Lightning
    # as Lightning: the step value leaves callback_metrics when the evaluation ends, stays in logged_metrics
    assert "v_step" not in trainer.callback_metrics
    assert float(trainer.callback_metrics["v_epoch"]) == pytest.approx(1.0)
    assert float(trainer.logged_metrics["v_step"]) == 2.0


# ---------------------------------------------------------------------- several dataloaders


def constant_loader(value: float, n: int = 16, batch_size: int = 8) -> DataLoader:
    x = torch.zeros(n, 3)
    return DataLoader(TensorDataset(x, torch.full((n, 1), value)), batch_size=batch_size)


class MultiLoader(LinearModel):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.calls.append((dataloader_idx, batch_idx))
        self.log("mean_y", batch[1].mean())
        self.log("shared", 1.0, add_dataloader_idx=False)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.calls.append((dataloader_idx, batch_idx))
        self.log("mean_y", batch[1].mean())

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return (dataloader_idx, batch_idx)


def test_several_val_dataloaders_get_their_index_and_suffixed_names(tmp_path):
    model = MultiLoader()
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, loader(16), [constant_loader(1.0, 16), constant_loader(3.0, 24)])
    assert model.calls == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    cb = trainer.callback_metrics
    assert float(cb["mean_y/dataloader_idx_0"]) == 1.0
    assert float(cb["mean_y/dataloader_idx_1"]) == 3.0
    assert "mean_y" not in cb
    assert float(cb["shared"]) == 1.0
    assert trainer.num_val_batches == [2, 3]


def test_sanity_check_covers_each_val_dataloader(tmp_path):
    model = MultiLoader()
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=1, limit_train_batches=1)
    trainer.fit(model, loader(16), [constant_loader(1.0), constant_loader(3.0)])
    assert model.calls[:2] == [(0, 0), (1, 0)]


def test_test_returns_one_dict_per_dataloader(tmp_path):
    results = quiet_trainer(tmp_path).test(
        MultiLoader(), [constant_loader(1.0), constant_loader(3.0), constant_loader(-2.0, 8)], verbose=False
    )
    assert results == [
        {"mean_y/dataloader_idx_0": 1.0},
        {"mean_y/dataloader_idx_1": 3.0},
        {"mean_y/dataloader_idx_2": -2.0},
    ]


def test_validate_with_several_dataloaders_shares_unsuffixed_names(tmp_path):
    results = quiet_trainer(tmp_path).validate(
        MultiLoader(), [constant_loader(1.0), constant_loader(5.0)], verbose=False
    )
    assert results == [{"mean_y/dataloader_idx_0": 1.0, "shared": 1.0}, {"mean_y/dataloader_idx_1": 5.0, "shared": 1.0}]


def test_predict_with_several_dataloaders(tmp_path):
    preds = quiet_trainer(tmp_path).predict(MultiLoader(), [constant_loader(1.0, 16), constant_loader(2.0, 8)])
    assert preds == [[(0, 0), (0, 1)], [(1, 0)]]


def test_single_dataloader_in_a_list_is_not_suffixed(tmp_path):
    class One(LinearModel):
        def test_step(self, batch, batch_idx):
            self.log("mean_y", batch[1].mean())

    results = quiet_trainer(tmp_path).test(One(), [constant_loader(4.0)], verbose=False)
    assert results == [{"mean_y": 4.0}]


# ---------------------------------------------------------------------- errors


def test_logging_a_non_scalar_tensor_raises(tmp_path):
    class Vector(LinearModel):
        def training_step(self, batch, batch_idx):
            self.log("vec", torch.ones(3))
            return super().training_step(batch, batch_idx)

    model = Vector()
    with pytest.raises(ValueError, match=r"'vec'.*shape \(3,\)"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, loader(16))
    assert model.training_step_calls == 0


def test_logging_a_string_raises(tmp_path):
    class Text(LinearModel):
        def validation_step(self, batch, batch_idx):
            self.log("name", "abc")

    with pytest.raises(ValueError, match=r"'name'.*`str` values cannot be logged"):  # (Lightning: ValueError)
        quiet_trainer(tmp_path).validate(Text(), loader(16), verbose=False)


def test_on_step_in_train_epoch_end_raises(tmp_path):
    class StepAtEpochEnd(LinearModel):
        def on_train_epoch_end(self):
            self.log("bad", 1.0, on_step=True)

    with pytest.raises(ValueError, match="on_step=True"):
        quiet_trainer(tmp_path, max_epochs=1).fit(StepAtEpochEnd(), loader(16))


def test_on_step_and_on_epoch_both_false_raises(tmp_path):
    class Never(LinearModel):
        def training_step(self, batch, batch_idx):
            self.log("x", 1.0, on_step=False, on_epoch=False)
            return super().training_step(batch, batch_idx)

    with pytest.raises(ValueError, match="on_step=False, on_epoch=False"):
        quiet_trainer(tmp_path, max_epochs=1).fit(Never(), loader(16))


def test_logging_while_predicting_raises(tmp_path):
    class LogPredict(LinearModel):
        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("p", 1.0)

    with pytest.raises(RuntimeError, match="predict"):
        quiet_trainer(tmp_path).predict(LogPredict(), loader(16))


def test_log_without_a_trainer_warns():
    model = LinearModel()
    with pytest.warns(UserWarning, match="not attached"):
        model.log("x", 1.0)


# ---------------------------------------------------------------------- no host sync per step


def test_self_log_does_no_host_sync_in_training_steps(tmp_path, monkeypatch):
    counts = {"item": 0, "tolist": 0, "__float__": 0, "cpu": 0, "__bool__": 0}
    state = {"in_steps": False}
    originals = {name: getattr(torch.Tensor, name) for name in counts}

    def counting(name):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            if state["in_steps"]:
                counts[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    class Logs(LinearModel):
        def training_step(self, batch, batch_idx):
            state["in_steps"] = True  # from here to the epoch's end (the DataLoader syncs once in iter())
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("loss", loss, prog_bar=True)
            self.log("both", loss, on_step=True, on_epoch=True)
            self.log("epoch_only", loss, on_epoch=True, on_step=False, reduce_fx="max")
            self.log_dict({"a": loss * 2, "b": 3.0})
            return loss

        def on_train_epoch_end(self):  # runs before the epoch's values are reduced and written
            state["in_steps"] = False

    for name in counts:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=2, log_every_n_steps=1000, logger=logger)
    trainer.fit(Logs(), loader(64, batch_size=8))
    assert trainer.global_step == 16
    assert counts == {"item": 0, "tolist": 0, "__float__": 0, "cpu": 0, "__bool__": 0}
    # the values did arrive at epoch end, in one transfer
    assert "both_epoch" in trainer.logged_metrics and "epoch_only" in trainer.logged_metrics


# ---------------------------------------------------------------------- torchmetrics objects


def test_logging_a_torchmetrics_metric_in_validation(tmp_path):
    torchmetrics = pytest.importorskip("torchmetrics")

    class WithMetric(LinearModel):
        def __init__(self):
            super().__init__()
            self.val_mean = torchmetrics.MeanMetric()

        def validation_step(self, batch, batch_idx):
            self.val_mean(batch[1].squeeze(1))  # element-wise mean over the whole epoch
            self.log("val_mean_y", self.val_mean)

    data = loader(20, batch_size=8)
    model = WithMetric()
    trainer = quiet_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model, loader(16), data)
    expected = float(data.dataset.tensors[1].mean())
    assert float(trainer.callback_metrics["val_mean_y"]) == pytest.approx(expected, rel=1e-6)
    # reset between epochs: the second epoch's value is not the mean over both epochs' updates
    assert model.val_mean.update_count == 0
    results = trainer.validate(model, data, verbose=False)
    assert results == [{"val_mean_y": pytest.approx(expected, rel=1e-6)}]


def test_logging_a_torchmetrics_metric_per_step_and_epoch(tmp_path):
    torchmetrics = pytest.importorskip("torchmetrics")

    class WithMetric(LinearModel):
        def __init__(self):
            super().__init__()
            self.total = torchmetrics.SumMetric()

        def training_step(self, batch, batch_idx):
            self.total(torch.tensor(float(batch_idx + 1)))
            self.log("total", self.total, on_step=True, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=1, log_every_n_steps=1)
    trainer.fit(WithMetric(), loader(32, batch_size=8))
    assert trainer.logged_metrics["total_epoch"] == pytest.approx(1 + 2 + 3 + 4)
    assert trainer.logged_metrics["total_step"] == pytest.approx(4.0)  # the last batch's own value


def test_epoch_end_logging_with_several_dataloaders_is_not_suffixed(tmp_path):
    class Aggregate(MultiLoader):
        def on_validation_epoch_end(self):
            self.log("aggregate", 5.0)

    trainer = quiet_trainer(tmp_path)
    results = trainer.validate(Aggregate(), [constant_loader(1.0), constant_loader(3.0)], verbose=False)
    assert results == [
        {"mean_y/dataloader_idx_0": 1.0, "shared": 1.0, "aggregate": 5.0},
        {"mean_y/dataloader_idx_1": 3.0, "shared": 1.0, "aggregate": 5.0},
    ]
