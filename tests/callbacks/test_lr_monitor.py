"""LearningRateMonitor: names, intervals and steps, read back from a real CSVLogger."""

from __future__ import annotations

import csv

import pytest
import torch

from ember.callbacks import LearningRateMonitor
from ember.loggers import CSVLogger
from helpers import LinearModel, loader, quiet_trainer


def series(logger: CSVLogger, key: str) -> list[tuple[int, float]]:
    with open(logger.metrics_file, newline="") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


class Scheduled(LinearModel):
    def __init__(self, interval: str = "step", groups: bool = False, name: str | None = None) -> None:
        super().__init__()
        self.interval, self.groups, self.sched_name = interval, groups, name

    def configure_optimizers(self):
        if self.groups:
            params = [{"params": [self.layer.weight]}, {"params": [self.layer.bias], "lr": 0.5, "name": "bias"}]
        else:
            params = self.parameters()
        opt = torch.optim.SGD(params, lr=1.0, momentum=0.9, weight_decay=0.01)
        sched = {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "interval": self.interval}
        if self.sched_name:
            sched["name"] = self.sched_name
        return {"optimizer": opt, "lr_scheduler": sched}


def fit(tmp_path, model, monitor, epochs=2, every=1, n=24):
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, logger=logger, log_every_n_steps=every, callbacks=[monitor])
    trainer.fit(model, loader(n, batch_size=8))  # 3 steps per epoch
    return logger


def test_step_interval_logs_the_rate_each_batch_used_at_its_step(tmp_path):
    logger = fit(tmp_path, Scheduled("step"), LearningRateMonitor("step"), epochs=1)
    assert series(logger, "lr-SGD") == [(0, 1.0), (1, 0.5), (2, 0.25)]  # at its loss's step, as Lightning


def test_log_every_n_steps_applies(tmp_path):
    logger = fit(tmp_path, Scheduled("step"), LearningRateMonitor("step"), epochs=2, every=2)
    assert series(logger, "lr-SGD") == [(1, 0.5), (3, 0.125), (5, 0.03125)]


def test_epoch_interval_logs_at_each_epoch_start(tmp_path):
    logger = fit(tmp_path, Scheduled("epoch"), LearningRateMonitor("epoch"), epochs=3)
    assert series(logger, "lr-SGD") == [(0, 1.0), (3, 0.5), (6, 0.25)]


def test_none_follows_each_schedulers_interval(tmp_path):
    step_logger = fit(tmp_path / "a", Scheduled("step"), LearningRateMonitor(), epochs=1)
    assert [s for s, _ in series(step_logger, "lr-SGD")] == [0, 1, 2]
    epoch_logger = fit(tmp_path / "b", Scheduled("epoch"), LearningRateMonitor(), epochs=2)
    assert series(epoch_logger, "lr-SGD") == [(0, 1.0), (3, 0.5)]


def test_param_groups_momentum_weight_decay_and_scheduler_names(tmp_path):
    monitor = LearningRateMonitor("epoch", log_momentum=True, log_weight_decay=True)
    logger = fit(tmp_path, Scheduled("epoch", groups=True, name="my-lr"), monitor, epochs=1)
    assert series(logger, "my-lr/pg1") == [(0, 1.0)]
    assert series(logger, "my-lr/bias") == [(0, 0.5)]
    assert series(logger, "my-lr/pg1-momentum") == [(0, 0.9)]
    assert series(logger, "my-lr/bias-weight_decay") == [(0, 0.01)]


def test_two_optimizers_of_one_class_and_adam_betas(tmp_path):
    class Two(LinearModel):
        automatic_optimization = False

        def training_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return [
                torch.optim.Adam([self.layer.weight], lr=0.1, betas=(0.8, 0.99)),
                torch.optim.Adam([self.layer.bias], lr=0.2),
            ]

    logger = fit(tmp_path, Two(), LearningRateMonitor("epoch", log_momentum=True), epochs=1)
    assert series(logger, "lr-Adam") == [(0, 0.1)]
    assert series(logger, "lr-Adam-1") == [(0, 0.2)]
    assert series(logger, "lr-Adam-momentum") == [(0, 0.8)]


def test_without_a_logger_it_says_so(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[LearningRateMonitor()])
    with pytest.raises(ValueError, match="LearningRateMonitor needs a logger"):
        trainer.fit(Scheduled(), loader(16))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"logging_interval": "batch"}, "logging_interval='batch'"), ({"log_momentum": 1}, "log_momentum")],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LearningRateMonitor(**kwargs)
