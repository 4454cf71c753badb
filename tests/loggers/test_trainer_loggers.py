"""self.log through the Trainer into TensorBoard, MLflow and CSV at once: values computed by hand
compared with what is read back from the event files, the SQLite store and the CSV file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
import yaml
from logger_readback import csv_rows, csv_series, mlflow_metrics, tb_scalars
from torch.nn import functional as F

from ember.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from helpers import LinearModel, loader, quiet_trainer


class Recorded(LinearModel):
    """Logs the loss per step and per epoch, and a validation loss; remembers what it logged."""

    def __init__(self, lr: float = 0.1, hidden: int = 4) -> None:
        super().__init__(lr)
        self.save_hyperparameters()
        self.val_losses: list[torch.Tensor] = []
        self.val_sizes: list[int] = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.val_losses.append(loss.detach().clone())
        self.val_sizes.append(len(x))
        self.log("val_loss", loss)


def weighted_mean(values, sizes) -> float:
    values = torch.stack(values).double()
    sizes = torch.tensor(sizes, dtype=torch.float64)
    return float((values * sizes).sum() / sizes.sum())


def test_the_same_hand_computed_values_reach_all_three_loggers(tmp_path, mlflow_dir):
    tb = TensorBoardLogger(tmp_path, name="tb")
    mlf = MLFlowLogger("fit", save_dir=mlflow_dir)
    csv_logger = CSVLogger(tmp_path, name="csv")
    model = Recorded()
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, logger=[tb, mlf, csv_logger], log_every_n_steps=2, num_sanity_val_steps=0
    )
    trainer.fit(model, loader(20, batch_size=8), loader(12, batch_size=8))  # train batches 8, 8, 4; val 8, 4

    losses, sizes = model.train_losses, model.train_batch_sizes
    expected = {
        # Lightning's step: every 2nd batch (1, 3, 5) at the count of batches stepped before it
        "loss_step": [(s, float(losses[s])) for s in (1, 3, 5)],
        # Lightning's step: the epoch's last batch (2, 5)
        "loss_epoch": [(2, weighted_mean(losses[:3], sizes[:3])), (5, weighted_mean(losses[3:], sizes[3:]))],
        "val_loss": [  # Lightning's step: the end-of-epoch validation at the epoch's last batch (2, 5)
            (2, weighted_mean(model.val_losses[:2], model.val_sizes[:2])),
            (5, weighted_mean(model.val_losses[2:], model.val_sizes[2:])),
        ],
        # Lightning: every row carries the epoch; in order: step, val, train epoch, step, step, val, train epoch
        "epoch": [(1, 0.0), (2, 0.0), (2, 0.0), (3, 1.0), (5, 1.0), (5, 1.0), (5, 1.0)],
    }
    rows = csv_rows(csv_logger.metrics_file)
    read_back = {
        "tensorboard": tb_scalars(tb.log_dir),
        "mlflow": mlflow_metrics(mlf),
        "csv": {key: csv_series(rows, key) for key in expected},
    }
    for name, got in read_back.items():
        assert set(got) == set(expected), name
        for key, series in expected.items():
            got_series = sorted(got[key]) if name == "mlflow" else got[key]
            if name == "mlflow" and key == "epoch":
                # MLflow keeps one entry per (key, step, value, millisecond): the equal epoch values of
                # the rows at one step (step, val and epoch rows) may collapse; CSV and TB pin every row
                got_series, series = sorted(set(got_series)), sorted(set(series))
            assert [s for s, _ in got_series] == [s for s, _ in series], (name, key)
            assert [v for _, v in got_series] == pytest.approx([v for _, v in series], rel=1e-6), (name, key)

    run = mlf.experiment.get_run(mlf.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "hidden": "4"}
    assert yaml.safe_load(open(tb.log_dir + "/hparams.yaml")) == {"lr": 0.1, "hidden": 4}
    assert yaml.safe_load(open(csv_logger.log_dir + "/hparams.yaml")) == {"lr": 0.1, "hidden": 4}
    assert float(trainer.callback_metrics["loss_epoch"]) == pytest.approx(expected["loss_epoch"][-1][1], rel=1e-6)
    assert float(trainer.logged_metrics["loss_step"]) == pytest.approx(expected["loss_step"][-1][1], rel=1e-6)


class MetricObjects(LinearModel):
    """Logs torchmetrics objects: a macro F1 per step and per epoch in training, one per epoch in
    validation (update() only). Predictions come from the inputs, so the values are known by hand."""

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassF1Score

        self.train_f1 = MulticlassF1Score(num_classes=3)
        self.val_f1 = MulticlassF1Score(num_classes=3)
        self.seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def classes(x: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        preds = (x[:, 0 if epoch == 0 else 2] > 0).long() * 2  # epoch 2 predicts differently
        return preds, target

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        preds, target = self.classes(batch[0], self.current_epoch)
        self.seen.append((self.current_epoch, preds, target))
        self.train_f1(preds, target)
        self.log("train_f1", self.train_f1, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        preds, target = self.classes(batch[0], 0)
        self.val_f1.update(preds, target)
        self.log("val_f1", self.val_f1)


def macro_f1(preds: torch.Tensor, target: torch.Tensor, classes: int = 3) -> float:
    """By hand: per-class F1 from counts, averaged over the classes that occur (torchmetrics' rule)."""
    scores = []
    for c in range(classes):
        tp = int(((preds == c) & (target == c)).sum())
        fp = int(((preds == c) & (target != c)).sum())
        fn = int(((preds != c) & (target == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def test_logging_a_torchmetrics_object_computes_at_epoch_end_and_resets(tmp_path):
    tb = TensorBoardLogger(tmp_path)
    csv_logger = CSVLogger(tmp_path, name="csv")
    model = MetricObjects()
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, logger=[tb, csv_logger], log_every_n_steps=1, num_sanity_val_steps=0
    )
    train, val = loader(20, batch_size=8), loader(12, batch_size=8)
    trainer.fit(model, train, val)

    step_expected = [(i, macro_f1(p, t)) for i, (_, p, t) in enumerate(model.seen)]  # Lightning's step: from 0
    epoch_expected = []
    for epoch in (0, 1):  # each epoch from its own batches only: the metric was reset in between
        preds = torch.cat([p for e, p, _ in model.seen if e == epoch])
        target = torch.cat([t for e, _, t in model.seen if e == epoch])
        epoch_expected.append((3 * (epoch + 1) - 1, macro_f1(preds, target)))  # Lightning's step: last batch
    x_val = torch.cat([x for x, _ in val])
    val_expected = macro_f1(*MetricObjects.classes(x_val, 0))
    assert epoch_expected[0][1] != pytest.approx(epoch_expected[1][1])

    rows = csv_rows(csv_logger.metrics_file)
    for got in (
        tb_scalars(tb.log_dir),
        {k: csv_series(rows, k) for k in ("train_f1_step", "train_f1_epoch", "val_f1")},
    ):
        assert [s for s, _ in got["train_f1_step"]] == [s for s, _ in step_expected]
        assert [v for _, v in got["train_f1_step"]] == pytest.approx([v for _, v in step_expected], rel=1e-6)
        assert [s for s, _ in got["train_f1_epoch"]] == [s for s, _ in epoch_expected] == [2, 5]  # Lightning's step
        assert [v for _, v in got["train_f1_epoch"]] == pytest.approx([v for _, v in epoch_expected], rel=1e-6)
        assert [v for _, v in got["val_f1"]] == pytest.approx([val_expected, val_expected], rel=1e-6)


def test_a_non_scalar_metric_object_is_refused_clearly(tmp_path):
    from torchmetrics.classification import MulticlassF1Score

    class PerClass(LinearModel):
        def __init__(self):
            super().__init__()
            self.f1 = MulticlassF1Score(num_classes=3, average="none")

        def training_step(self, batch, batch_idx):
            self.f1.update(torch.tensor([0, 1]), torch.tensor([0, 2]))
            self.log("f1", self.f1, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=CSVLogger(tmp_path))
    with pytest.raises(ValueError, match=r"self.log\('f1', MulticlassF1Score\).*shape \(3,\)"):
        trainer.fit(PerClass(), loader(16))


def test_default_logger_is_tensorboard_under_default_root_dir(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=True, max_epochs=1, log_every_n_steps=1, num_sanity_val_steps=0)
    model = Recorded()
    trainer.fit(model, loader(16))
    assert isinstance(trainer.logger, TensorBoardLogger)
    assert trainer.log_dir == str(tmp_path / "ember_logs" / "version_0")
    assert [s for s, _ in tb_scalars(trainer.log_dir)["loss_step"]] == [0, 1]  # Lightning's step: from 0


def test_default_logger_is_csv_without_tensorboard(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    trainer = quiet_trainer(tmp_path, logger=True, max_epochs=1)
    assert isinstance(trainer.logger, CSVLogger)


def test_mlflow_run_is_failed_when_training_raises(tmp_path, mlflow_dir):
    class Boom(LinearModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss)
            if batch_idx == 1:
                raise RuntimeError("boom")
            return loss

    mlf = MLFlowLogger("boom", save_dir=mlflow_dir)
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=mlf, log_every_n_steps=1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Boom(), loader(32))
    assert mlf.experiment.get_run(mlf.run_id).info.status == "FAILED"
    # Lightning's step: the first batch's row is at step 0
    assert mlflow_metrics(mlf)["loss"] == [(0, pytest.approx(float(trainer.model.train_losses[0])))]


def test_resume_continues_the_tensorboard_version_with_the_global_step(tmp_path):
    first = Recorded()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=TensorBoardLogger(tmp_path), log_every_n_steps=1)
    trainer.fit(first, loader(24))  # rows at steps 0..2 (Lightning's)
    ckpt = Path(trainer.log_dir) / "epoch1.ckpt"  # in the run's folder: a resume continues that run
    trainer.save_checkpoint(ckpt)
    second = Recorded()
    resumed = quiet_trainer(tmp_path, max_epochs=2, logger=TensorBoardLogger(tmp_path), log_every_n_steps=1)
    resumed.fit(second, loader(24), ckpt_path=ckpt)  # rows at steps 3..5 (Lightning's)
    assert resumed.log_dir == trainer.log_dir  # version_0 continued, no version_1
    got = tb_scalars(trainer.log_dir)["loss_step"]
    expected = [*first.train_losses, *second.train_losses]
    assert [s for s, _ in got] == [0, 1, 2, 3, 4, 5]  # Lightning's step: batches stepped before, across the resume
    assert [v for _, v in got] == pytest.approx([float(v) for v in expected], rel=1e-6)


class FloatsOnly(Logger):
    """A third-party logger written for Lightning's protocol: it expects Python floats."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, int]] = []

    name = "floats"
    version = 0

    def log_metrics(self, metrics, step):
        assert all(type(v) is float for v in metrics.values()), metrics
        self.calls.append((dict(metrics), step))


def test_loggers_that_do_not_take_tensors_get_floats(tmp_path):
    logger = FloatsOnly()
    model = Recorded()
    quiet_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1).fit(model, loader(16))
    assert [step for _, step in logger.calls] == [0, 1, 1]  # Lightning's step: two step rows, then the epoch row
    assert logger.calls[0][0]["loss_step"] == pytest.approx(float(model.train_losses[0]))


def test_a_logger_class_instead_of_an_instance_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"logger\[0\]=.*TensorBoardLogger.*is not a logger instance"):
        quiet_trainer(tmp_path, logger=[TensorBoardLogger])


def test_model_and_datamodule_hyperparameter_clash_is_named(tmp_path):
    import ember

    class Data(ember.DataModule):
        def __init__(self, lr: float = 0.5):
            super().__init__()
            self.save_hyperparameters()

        def train_dataloader(self):
            return loader(16)

    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=CSVLogger(tmp_path))
    with pytest.raises(ValueError, match=r"hyperparameters \['lr'\] with different values"):
        trainer.fit(Recorded(lr=0.1), datamodule=Data())


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_no_device_to_host_transfer_in_the_main_thread_per_step(tmp_path, mlflow_dir, monkeypatch, device):
    """DESIGN.md rule 1 with log_every_n_steps=1: loggers take the tensors and move device values
    to the host only when they write (TensorBoard: here not before the epoch's end; MLflow: on its
    own thread). Reading a CPU tensor's value is no transfer (the loggers read those at once)."""
    main = threading.main_thread()
    counts = {"item": 0, "tolist": 0, "__float__": 0, "cpu": 0, "__bool__": 0}
    state = {"in_steps": False}
    originals = {name: getattr(torch.Tensor, name) for name in counts}

    def counting(name):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            if state["in_steps"] and threading.current_thread() is main and (name != "item" or not self.is_cpu):
                counts[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    class Steps(LinearModel):
        def training_step(self, batch, batch_idx):
            state["in_steps"] = True
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss, prog_bar=True)
            self.log_dict({"a": loss * 2, "b": 3.0})
            return loss

        def on_train_epoch_end(self):
            state["in_steps"] = False

    loggers = [
        TensorBoardLogger(tmp_path, flush_secs=1000),
        MLFlowLogger("sync", save_dir=mlflow_dir, flush_secs=0.01),
        CSVLogger(tmp_path),
    ]
    loggers[1].log_hyperparams({"made": "before"})  # the run exists before timing starts
    for name in counts:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    model = Steps()
    accelerator = "gpu" if device == "cuda" else "cpu"
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=loggers, log_every_n_steps=1, accelerator=accelerator)
    trainer.fit(model, loader(64, batch_size=4))  # 16 steps
    assert counts == dict.fromkeys(counts, 0)
    assert len(tb_scalars(loggers[0].log_dir)["loss"]) == 16
    assert len(mlflow_metrics(loggers[1])["a"]) == 16
